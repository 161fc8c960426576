"""Evaluates Neutron's port binding rules with the stack's policy override (issue 15).

Run with the stack's Neutron venv python: check_neutron_policy.py POLICY_FILE
Prints one JSON object: rule -> {case: allowed} for a port kuryr-rs makes (device_owner
compute:kuryr, on a network of the port's project), for the cases
  kuryr_own    roles member, reader, kuryr; the port in its own project
  kuryr_other  the same credential; the port in another project
  member_own   roles member, reader (no kuryr); its own project
  service_any  role service; another project (Neutron's default rule, kept for services)
Neutron's own registered defaults are loaded first, the file overrides them, as neutron-server does.
"""
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

from oslo_config import cfg  # noqa: E402
from oslo_policy import policy  # noqa: E402
# Neutron's own checks (field:, tenant_id:, project_id:) first: the defaults are parsed on import.
import neutron.policy  # noqa: E402,F401
from neutron.conf import policies  # noqa: E402

RULES = [
    "create_port:binding:host_id",
    "update_port:binding:host_id",
    "get_port:binding:host_id",
    "get_port:binding:vif_type",
    "get_port:binding:vif_details",
    "get_port:binding:profile",
    "delete_port",
]
CASES = {
    "kuryr_own": (["member", "reader", "kuryr"], "k8s", "k8s"),
    "kuryr_other": (["member", "reader", "kuryr"], "k8s", "other"),
    "member_own": (["member", "reader"], "k8s", "k8s"),
    "service_any": (["service"], "service", "other"),
}

path = os.path.abspath(sys.argv[1])
if not os.path.isfile(path):
    # oslo.policy would ignore a missing file silently (defaults only).
    sys.exit(f"no policy file {path}")
conf = cfg.ConfigOpts()
conf([], project="neutron")
enforcer = policy.Enforcer(conf, policy_file=path)
enforcer.register_defaults(policies.list_rules())
enforcer.load_rules()
out = {}
for rule in RULES:
    out[rule] = {}
    for case, (roles, project, target) in CASES.items():
        creds = {"roles": roles, "project_id": project, "user_id": "u"}
        # A kuryr-made port: device_owner compute:kuryr, on a network of the port's project.
        port = {"project_id": target, "tenant_id": target, "device_owner": "compute:kuryr", "network:tenant_id": target,
                "network:project_id": target}
        out[rule][case] = bool(enforcer.enforce(rule, port, creds))
print(json.dumps(out))
