//! Detector flags on principals, and the flags waiting to be shared with other instances.
//!
//! A client address is flagged in its own tracker entry; a principal (a token's subject) has
//! no entry there, because the screen scores requests before authentication. Its flag lives
//! here and raises the score where the principal is known (the rate-limit layer).
//!
//! With a shared store, every flag raised here also goes to an outbox that the gateway
//! publishes, and flags other instances raised come back through
//! [`ClientTracker::apply_shared`](super::ClientTracker::apply_shared).

use crate::generations::Generations;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

/// Principals flagged at once per generation: at most twice this many are held.
const MAX_PRINCIPALS: usize = 10_000;
/// Flags waiting to be published at most; past it the oldest are published late or not at
/// all (each instance still enforces its own).
const MAX_OUTBOX: usize = 1_024;
/// Longest principal kept (longer ones are cut: the flag is about the token's subject, and
/// a subject this long is itself unusual).
const MAX_PRINCIPAL_LEN: usize = 256;

/// Who a flag is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flagged {
    /// A client address.
    Client(IpAddr),
    /// A principal (the token's subject).
    Principal(String),
}

/// A flag as instances share it: who, and until when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFlag {
    /// Who is flagged.
    pub who: Flagged,
    /// Until when.
    pub until: u64,
}

impl SharedFlag {
    /// Its name in the shared store: `client:<ip>` or `principal:<subject>`.
    pub fn member(&self) -> String {
        match &self.who {
            Flagged::Client(ip) => format!("client:{ip}"),
            Flagged::Principal(p) => format!("principal:{p}"),
        }
    }

    /// A flag read back from the shared store (`None` for a name this version does not know).
    pub fn parse(member: &str, until: u64) -> Option<SharedFlag> {
        let who = if let Some(ip) = member.strip_prefix("client:") {
            Flagged::Client(ip.parse().ok()?)
        } else {
            let principal = member.strip_prefix("principal:")?;
            Flagged::Principal(bounded(principal).to_string())
        };
        Some(SharedFlag { who, until })
    }
}

/// A principal flagged now, as `/admin/offenders` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FlaggedPrincipal {
    /// The principal.
    pub principal: String,
    /// Seconds left of the flag.
    pub flagged_for: u64,
    /// The detector that flagged it (`shared` when another instance did).
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Flag {
    until: u64,
    reason: &'static str,
}

/// Principal flags and the outbox (see the module docs).
#[derive(Debug, Default)]
pub(super) struct FlagBoard {
    /// Whether any principal was ever flagged: unflagged deployments skip the lock.
    any: AtomicBool,
    /// Read on every authenticated request once a flag exists, written only by a flag.
    principals: RwLock<Option<Generations<Box<str>, Flag>>>,
    outbox: Mutex<Vec<SharedFlag>>,
    /// Whether flags are queued for sharing at all (a shared store is configured).
    pub(super) sharing: AtomicBool,
}

fn bounded(principal: &str) -> &str {
    let mut end = principal.len().min(MAX_PRINCIPAL_LEN);
    while !principal.is_char_boundary(end) {
        end -= 1;
    }
    &principal[..end]
}

impl FlagBoard {
    /// Flags `principal` until `until` (a later flag extends, never shortens).
    pub(super) fn flag_principal(&self, principal: &str, until: u64, reason: &'static str) {
        let principal = bounded(principal);
        // Most shared flags come back every second unchanged: a read settles those.
        let held = self
            .principals
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|map| map.get(principal).map(|f| f.until));
        if held.is_some_and(|held| held >= until) {
            return;
        }
        {
            let mut map = self
                .principals
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let map = map.get_or_insert_with(|| Generations::new(MAX_PRINCIPALS));
            let flag = map.entry(principal.into(), || Flag { until: 0, reason });
            if until > flag.until {
                *flag = Flag { until, reason };
            }
        }
        self.any.store(true, Ordering::Release);
        if reason != SHARED {
            self.queue(Flagged::Principal(principal.to_string()), until);
        }
    }

    /// Whether `principal` is flagged at `now` (Unix seconds).
    pub(super) fn principal_flagged(&self, principal: &str, now: u64) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let map = self
            .principals
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        // Looked up, not inserted: an unflagged principal must not take a slot.
        map.as_ref()
            .and_then(|map| map.get(bounded(principal)))
            .is_some_and(|f| f.until > now)
    }

    /// The principals flagged at `now`, longest flag first, at most `n`.
    pub(super) fn flagged(&self, now: u64, n: usize) -> Vec<FlaggedPrincipal> {
        let map = self
            .principals
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut flagged: Vec<FlaggedPrincipal> = map
            .iter()
            .flat_map(|m| m.iter())
            .filter(|(_, f)| f.until > now)
            .map(|(p, f)| FlaggedPrincipal {
                principal: p.to_string(),
                flagged_for: f.until - now,
                reason: f.reason,
            })
            .collect();
        flagged.sort_by_key(|f| std::cmp::Reverse(f.flagged_for));
        flagged.truncate(n);
        flagged
    }

    /// Queues a flag for sharing (when sharing is on).
    pub(super) fn queue(&self, who: Flagged, until: u64) {
        if !self.sharing.load(Ordering::Relaxed) {
            return;
        }
        let mut outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        if outbox.len() < MAX_OUTBOX {
            outbox.push(SharedFlag { who, until });
        }
    }

    /// The queued flags, emptying the queue.
    pub(super) fn take_outbox(&self) -> Vec<SharedFlag> {
        std::mem::take(&mut *self.outbox.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The reason of a flag that came from another instance.
pub(super) const SHARED: &str = "shared";
