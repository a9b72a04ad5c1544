"""A one-file Django project whose URLconf cannot be imported: Django finds out only when
it resolves the first request (tests/integration/test_django.py)."""

from __future__ import annotations

from django.conf import settings

settings.configure(DEBUG=False, SECRET_KEY="not-a-secret", ALLOWED_HOSTS=["*"],
                   ROOT_URLCONF="django_broken_urls_missing")  # no such module

from django.core.wsgi import get_wsgi_application  # noqa: E402 -- after configure()

application = get_wsgi_application()
