"""Privacy and security: pseudonymization (``pseudonym``), field encryption
(``crypto``), API keys (``apikeys``), tenants (``tenants``), consent (``consent``),
erasure and unlearning (``erasure``, ``unlearn``), retention (``retention``) and noise
on released aggregates (``noise``). See "Privacy and security" in docs/architecture.md.

Modules are imported where used (this package imports nothing), so the engine and the
API can depend on the parts they need without cycles.
"""
