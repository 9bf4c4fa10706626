//! The one way this crate takes a `std` mutex.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, whether or not a panic poisoned it.
///
/// Poisoning marks a mutex whose holder panicked, in case it left the data half-changed.
/// For the locks that use this helper that cannot happen in a way a later holder could see:
/// every section holding one is short and synchronous and touches only a `std` collection or
/// a plain value — no `.await`, no plugin code, no I/O — and no section makes two changes that
/// must be seen together. A `std` collection stays valid when a panic unwinds out of one of
/// its methods, so what a panicking holder leaves is a state some holder could have left on
/// purpose: at worst an entry missing, which each map's users already handle (a cache miss,
/// an execution that recovery drives again). Passing the poison on instead would turn one
/// panicked task into a host whose every later request panics on the same lock.
///
/// A lock whose sections do not meet that bar must not use this helper.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_taken() {
        let m = std::sync::Arc::new(Mutex::new(vec![1]));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let mut v = held.lock().unwrap();
            v.push(2);
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), vec![1, 2]);
    }
}
