//! Leases: a dead man's switch. A client creates a lease with a period and renews it; faults
//! tagged with the lease are rolled back when renewals stop for longer than the period. Leases
//! live in memory only: a restart already rolls back every fault of the previous process.
use std::time::Duration;

use super::record::{now_boottime_ms, now_unix_ms};

#[derive(Debug, Clone)]
pub struct Lease {
    pub id: String,
    pub name: String,
    pub period: Duration,
    pub owner: String,
    /// CLOCK_BOOTTIME of the last renewal.
    pub renewed_boottime_ms: u64,
    pub renewed_unix_ms: i64,
    pub expired: bool,
}

impl Lease {
    pub fn new(name: &str, period: Duration, owner: &str) -> Lease {
        Lease {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            period,
            owner: owner.into(),
            renewed_boottime_ms: now_boottime_ms(),
            renewed_unix_ms: now_unix_ms(),
            expired: false,
        }
    }

    pub fn renew(&mut self) {
        self.renewed_boottime_ms = now_boottime_ms();
        self.renewed_unix_ms = now_unix_ms();
    }

    pub fn is_overdue(&self, now_boottime_ms: u64) -> bool {
        now_boottime_ms >= self.renewed_boottime_ms + self.period.as_millis() as u64
    }

    pub fn expires_unix_ms(&self) -> i64 {
        self.renewed_unix_ms + self.period.as_millis() as i64
    }
}
