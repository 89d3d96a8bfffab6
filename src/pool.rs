//! A bounded pool of worker threads for per-device work. Results come back over a channel to
//! the calling thread, which alone turns them into events: one writer of stdout.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// Run `work` on every item with at most `jobs` threads; `on_result` is called on the calling
/// thread as each result arrives (completion order).
pub fn run<T, R, W, F>(items: Vec<T>, jobs: usize, work: W, mut on_result: F)
where
    T: Send + 'static,
    R: Send + 'static,
    W: Fn(T) -> R + Send + Sync + 'static,
    F: FnMut(R),
{
    let n = items.len();
    let queue = Arc::new(Mutex::new(items.into_iter()));
    let work = Arc::new(work);
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = (0..jobs.clamp(1, n.max(1)))
        .map(|_| {
            let queue = Arc::clone(&queue);
            let work = Arc::clone(&work);
            let tx = tx.clone();
            std::thread::spawn(move || loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some(item) = next else { break };
                if tx.send(work(item)).is_err() {
                    break;
                }
            })
        })
        .collect();
    drop(tx);
    for r in rx {
        on_result(r);
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Long-lived workers for a poll loop: `n` threads run each job sent on the returned channel
/// and hand the result to `done`, then call `wake` (the loop's mio waker) so the loop picks it up.
pub fn workers<J, R>(
    n: usize,
    name: &str,
    run: impl Fn(J) -> R + Send + Sync + 'static,
    done: mpsc::Sender<R>,
    wake: impl Fn() + Send + Sync + 'static,
) -> std::io::Result<mpsc::Sender<J>>
where
    J: Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = mpsc::channel::<J>();
    let rx = Arc::new(Mutex::new(rx));
    let (run, wake) = (Arc::new(run), Arc::new(wake));
    for i in 0..n.max(1) {
        let (rx, done, run, wake) = (
            Arc::clone(&rx),
            done.clone(),
            Arc::clone(&run),
            Arc::clone(&wake),
        );
        std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || loop {
                let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok(job) = next else { break };
                if done.send(run(job)).is_err() {
                    break;
                }
                wake();
            })?;
    }
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn workers_run_every_job_and_wake_the_loop() {
        let (done_tx, done_rx) = mpsc::channel();
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&wakes);
        let jobs = workers(
            3,
            "t",
            |x: u32| x + 1,
            done_tx,
            move || {
                w.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
        for i in 0..10 {
            jobs.send(i).unwrap();
        }
        let mut got: Vec<u32> = (0..10).map(|_| done_rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, (1..=10).collect::<Vec<_>>());
        drop(jobs);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(wakes.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn every_item_once_and_never_more_than_jobs_at_once() {
        let live = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (l, p) = (live.clone(), peak.clone());
        let mut got = Vec::new();
        run(
            (0..40).collect(),
            4,
            move |i: u32| {
                let now = l.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(2));
                l.fetch_sub(1, Ordering::SeqCst);
                i * 2
            },
            |r| got.push(r),
        );
        got.sort();
        assert_eq!(got, (0..40).map(|i| i * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 4);
        assert!(peak.load(Ordering::SeqCst) >= 2, "ran sequentially");
    }
}
