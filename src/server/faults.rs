//! Adapter for faultd's own `faultd.v1` services (faults, leases, doctor).
