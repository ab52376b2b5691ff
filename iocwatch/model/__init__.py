"""The ground floor: data types every layer shares (channels, observations, TLS sessions,
host and record readers). Modules here import nothing from iocwatch above this package."""
