//! Reduced-precision matmuls (TF32) as an opt-in of the training kinds (`tf32 = true`).
//!
//! candle's switch (`candle_core::cuda::set_gemm_reduced_precision_f32`) is process-wide and
//! acts on cuBLAS only: on the CPU it changes nothing. Because two training nodes may run at
//! once in one process, a node holds its mode for as long as it trains, and a node that wants
//! the other mode waits until no node holds the first. A node's output is then always made in
//! the mode its parameters (and so its cache key) say.

use std::sync::{Condvar, Mutex};

/// (the mode in force, how many nodes hold it)
static MODE: Mutex<(bool, usize)> = Mutex::new((false, 0));
static RELEASED: Condvar = Condvar::new();

/// Held while a node trains in one mode; dropping it lets the other mode in.
#[must_use = "the mode holds only while the guard lives"]
pub struct Precision {
    pub tf32: bool,
}

impl Precision {
    /// Waits until `tf32` can be in force, then sets candle's switch to it.
    pub fn hold(tf32: bool) -> Precision {
        let mut m = MODE.lock().unwrap_or_else(|e| e.into_inner());
        while m.1 > 0 && m.0 != tf32 {
            m = RELEASED.wait(m).unwrap_or_else(|e| e.into_inner());
        }
        if m.1 == 0 {
            candle_core::cuda::set_gemm_reduced_precision_f32(tf32);
        }
        *m = (tf32, m.1 + 1);
        Precision { tf32 }
    }
}

impl Drop for Precision {
    fn drop(&mut self) {
        let mut m = MODE.lock().unwrap_or_else(|e| e.into_inner());
        m.1 -= 1;
        if m.1 == 0 {
            // back to candle's default for whatever runs next outside a training node
            candle_core::cuda::set_gemm_reduced_precision_f32(false);
            *m = (false, 0);
            RELEASED.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn one_mode_at_a_time_and_holders_of_one_mode_share_it() {
        let a = Precision::hold(true);
        let b = Precision::hold(true); // the same mode enters at once
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let g = Precision::hold(false);
            tx.send(g.tf32).unwrap();
        });
        // the other mode waits while either holder lives
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(a);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(b);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(false));
        waiter.join().unwrap();
    }
}
