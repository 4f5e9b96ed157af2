"""The stack's own ground, below everything but `components`: the one settings
object (`settings`), the secrets (`secrets`), every name that crosses a package
boundary (`contracts`), the local services `edgeloop up` starts (`services`), and
the registry's webhook receiver (`webhook_receiver`)."""
