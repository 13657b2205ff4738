"""Who is asking and what they may see: HQ users and their roles, API tokens, the ``Scope``
every HQ read goes through, personal data masked below HQ admin, and the audit log."""
