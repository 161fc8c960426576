# WSGI entry for the neutron API under gunicorn (neutron 29 ships no neutron-server):
# oslo.config parses sys.argv, so hide gunicorn's command line from it.
import sys
sys.argv = [sys.argv[0]]
from neutron.wsgi.api import application  # noqa: E402,F401
