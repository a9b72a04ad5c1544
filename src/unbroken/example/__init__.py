"""The bundled example app that `unbroken drill` serves and reloads (README, first command)."""
