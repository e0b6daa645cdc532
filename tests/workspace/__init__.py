"""Cross-package checks: layering, vendorability, and built distributions that install alone."""
