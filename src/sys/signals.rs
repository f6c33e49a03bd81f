//! Watches for SIGINT, SIGTERM and SIGHUP so a run can stop its VM in order instead of
//! dying with it. Waiting loops poll `pending()`.

use crate::sys::error::{Error, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct SignalWatch {
    last: Arc<AtomicI32>,
}

impl SignalWatch {
    pub fn install() -> Result<SignalWatch> {
        let last = Arc::new(AtomicI32::new(0));
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| Error::setup(format!("cannot install signal handlers: {e}")))?;
        let seen = last.clone();
        crate::sys::threads::spawn("signals", move || {
            for sig in signals.forever() {
                seen.store(sig, Ordering::SeqCst);
            }
        })?;
        Ok(SignalWatch { last })
    }

    pub fn pending(&self) -> Option<i32> {
        match self.last.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig),
        }
    }
}
