//! A bounded worker pool for work that mostly waits on child processes or
//! the kernel (container starts and stops, Btrfs snapshots): at most
//! `workers` items run at once, and a free worker takes the next item at
//! once, so one slow item never holds back a whole batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `work` on every item with at most `workers` at once; the results
/// come back in the order of `items`. A panicking item yields `on_panic`.
pub fn run<T, R, F>(
    items: &[T],
    workers: usize,
    work: F,
    on_panic: impl Fn(&T) -> R + Sync,
) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let threads = workers.max(1).min(items.len());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(item)))
                    .unwrap_or_else(|_| on_panic(item));
                if let Ok(mut slots) = slots.lock() {
                    slots[i] = Some(r);
                }
            });
        }
    });
    let slots = slots.into_inner().unwrap_or_else(|p| p.into_inner());
    slots
        .into_iter()
        .zip(items)
        .map(|(r, item)| r.unwrap_or_else(|| on_panic(item)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn keeps_order_bounds_concurrency_and_survives_panics() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<u32> = (0..40).collect();
        let out = run(
            &items,
            4,
            |&i| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(if i % 7 == 0 { 20 } else { 2 }));
                running.fetch_sub(1, Ordering::SeqCst);
                if i == 13 {
                    panic!("item 13");
                }
                i * 2
            },
            |_| u32::MAX,
        );
        assert_eq!(out.len(), 40);
        assert_eq!(out[3], 6);
        assert_eq!(out[13], u32::MAX);
        assert!(peak.load(Ordering::SeqCst) <= 4);
        assert!(run(&Vec::<u32>::new(), 4, |&i| i, |_| 0).is_empty());
    }
}
