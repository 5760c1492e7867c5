"""The node: machine detection, resources and onboarding (and later the node facade)."""
