# WSGI entry for keystone under gunicorn: oslo.config parses sys.argv, so hide
# gunicorn's command line from it. Config: OS_KEYSTONE_CONFIG_DIR / OS_KEYSTONE_CONFIG_FILES.
import sys
sys.argv = [sys.argv[0]]
from keystone.wsgi.api import application  # noqa: E402,F401
