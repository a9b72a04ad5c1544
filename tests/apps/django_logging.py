"""A one-file Django project whose view logs one line per request, as apps do.

Its LOGGING puts a console handler on the app's logger (propagate left on, as in Django's
own examples), and DEBUG=True gives Django's DEFAULT_LOGGING console handler on `django`:
both used to print each record a second time through unbroken's root handler.
"""

from __future__ import annotations

import logging

from django.conf import settings

settings.configure(
    DEBUG=True, SECRET_KEY="not-a-secret", ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"],
    LOGGING={"version": 1, "disable_existing_loggers": False,
             "handlers": {"console": {"class": "logging.StreamHandler"}},
             "loggers": {"djapp": {"handlers": ["console"], "level": "INFO"}}})

from django.core.wsgi import get_wsgi_application  # noqa: E402 -- after configure()
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

log = logging.getLogger("djapp")


def hello(request: HttpRequest) -> HttpResponse:
    log.info("djapp served %s", request.path)
    return HttpResponse("hello\n")


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n")


urlpatterns = [path("", hello), path("healthz", healthz)]
application = get_wsgi_application()
