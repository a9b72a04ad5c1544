"""The bundled example app and the demo that reloads it under load (README, first command)."""
