"""Every side effect of the engine: the directory over LDAP, hosts over PSRP, tickets over HTTP.

Activities raise the engine's error classes (`activities.errors`) and hand Temporal their ApplicationError form.
"""
