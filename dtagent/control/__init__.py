"""The control wing: change a zone's caps under a policy, audited, with read-back.

It is separate from the metrics path and off by default: nothing here runs unless the
operator enables it (``[control]`` in the config, or the ``dtagent caps`` commands), and
reading metrics never imports it. One request goes through the same steps whatever its
source (CLI, HTTP API, Alertmanager webhook):

  validate (properties) → resolve the zone and read its caps (platform) → policy →
  audit record (fsync'ed; no record, no change) → apply → read back → audit record.
"""
