"""Re-export of the ``mosquitto`` fixture (it lives in tests/support/mosquitto.py).

Test modules import ``mosquitto_fixture`` (with a noqa for F401); pytest registers it as
``mosquitto``. Importing it as ``mosquitto`` works too, but then ruff reports F811 on the test's
``mosquitto`` parameter.
"""

from tests.support.mosquitto import Mosquitto, mosquitto, mosquitto_fixture

__all__ = ["Mosquitto", "mosquitto", "mosquitto_fixture"]
