"""Device bench: latency of exported bundles on phones over ADB, or on this host (the default)."""
