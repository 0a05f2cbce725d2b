"""Who may do what: local users and sign-in, the audit log."""
