"""trustpull: verified docker pulls (Docker Content Trust / Notary v1), as a library."""

__version__ = "0.1.0"
