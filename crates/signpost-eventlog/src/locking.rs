//! Waiting out a directory lock for a moment before refusing.
//!
//! Both stores lock their directory so that two servers never write one log. Within one
//! process a lock can outlive the handle that took it by a moment: sled's I/O threads hold
//! its database until they finish the last writes, and a child process started by another
//! thread (tests start servers) holds a copy of every open descriptor between its fork and
//! its exec, the lock's included. An open retries while the lock is held, for a bounded
//! time; a lock still held then is another holder's, and the open is refused.

use std::time::{Duration, Instant};

/// How long an open waits for a held lock by default.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Runs `attempt` until it succeeds, fails otherwise than `is_locked`, or `wait` has passed.
pub(crate) fn retry_while_locked<T, E>(
    wait: Duration,
    mut attempt: impl FnMut() -> Result<T, E>,
    is_locked: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let deadline = Instant::now() + wait;
    loop {
        match attempt() {
            Err(error) if is_locked(&error) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            done => return done,
        }
    }
}
