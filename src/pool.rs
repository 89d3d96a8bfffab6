//! A bounded pool of worker threads for per-device work. Results come back over a channel to
//! the calling thread, which alone turns them into events: one writer of stdout.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

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

/// Workers created on demand: a job that finds no idle worker gets a new thread, up to `max`; a
/// worker idle for `linger` exits. For work that must start the moment it is asked for (an alarm
/// storm stops a thousand captures at once) without keeping a thousand idle threads the rest of
/// the time. Results go to `done`, then `wake` is called, as with [`workers`].
pub struct Elastic<J> {
    shared: Arc<Shared<J>>,
    work: Arc<dyn Fn(J) + Send + Sync>,
    name: String,
    linger: Duration,
}

struct Shared<J> {
    state: Mutex<State<J>>,
    ready: Condvar,
}

struct State<J> {
    queue: VecDeque<J>,
    idle: usize,
    threads: usize,
    max: usize,
    spawned: usize,
    closed: bool,
}

impl<J> Shared<J> {
    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<J: Send + 'static> Elastic<J> {
    pub fn new<R: Send + 'static>(
        max: usize,
        linger: Duration,
        name: &str,
        run: impl Fn(J) -> R + Send + Sync + 'static,
        done: mpsc::Sender<R>,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Elastic<J> {
        Elastic {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    idle: 0,
                    threads: 0,
                    max: max.max(1),
                    spawned: 0,
                    closed: false,
                }),
                ready: Condvar::new(),
            }),
            work: Arc::new(move |job| {
                if done.send(run(job)).is_ok() {
                    wake();
                }
            }),
            name: name.to_string(),
            linger,
        }
    }

    /// Queues `job`; starts a thread for it when every live worker is busy and there is room.
    /// Fails (handing the job back) only when no thread exists and none could be started.
    pub fn submit(&self, job: J) -> Result<(), (J, std::io::Error)> {
        let mut st = self.shared.lock();
        st.queue.push_back(job);
        if st.queue.len() <= st.idle || st.threads >= st.max {
            self.shared.ready.notify_one();
            return Ok(());
        }
        // Spawned under the lock: a worker cannot see `threads` before the thread exists.
        let (shared, work, linger) = (
            Arc::clone(&self.shared),
            Arc::clone(&self.work),
            self.linger,
        );
        let spawned = std::thread::Builder::new()
            .name(format!("{}-{}", self.name, st.spawned))
            .spawn(move || worker(&shared, work.as_ref(), linger));
        match spawned {
            Ok(_) => {
                st.threads += 1;
                st.spawned += 1;
                Ok(())
            }
            Err(e) if st.threads == 0 => {
                let job = st.queue.pop_back().expect("just queued");
                Err((job, e))
            }
            Err(e) => {
                log::warn!(
                    "{}: no new thread ({e}); the job waits for a busy one",
                    self.name
                );
                Ok(())
            }
        }
    }

    /// Live worker threads.
    #[cfg(test)]
    pub fn threads(&self) -> usize {
        self.shared.lock().threads
    }
}

impl<J> Drop for Elastic<J> {
    /// Workers finish the queued jobs, then exit.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

fn worker<J>(shared: &Shared<J>, work: &(dyn Fn(J) + Send + Sync), linger: Duration) {
    /// A job that panics unwinds this thread: it must still stop counting as a worker, or the
    /// pool would believe itself full and leave jobs queued with no thread.
    struct Leaving<'a, J>(&'a Shared<J>, bool);
    impl<J> Drop for Leaving<'_, J> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.lock().threads -= 1;
            }
        }
    }
    let mut leaving = Leaving(shared, false);
    let mut st = shared.lock();
    loop {
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            work(job);
            st = shared.lock();
            continue;
        }
        if st.closed {
            break;
        }
        st.idle += 1;
        let (guard, waited) = shared
            .ready
            .wait_timeout(st, linger)
            .unwrap_or_else(|p| p.into_inner());
        st = guard;
        st.idle -= 1;
        if waited.timed_out() && st.queue.is_empty() {
            break;
        }
    }
    st.threads -= 1;
    leaving.1 = true;
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

    fn elastic(max: usize, linger_ms: u64) -> (Elastic<u64>, mpsc::Receiver<u64>) {
        let (done_tx, done_rx) = mpsc::channel();
        let pool = Elastic::new(
            max,
            Duration::from_millis(linger_ms),
            "t",
            |ms: u64| {
                std::thread::sleep(Duration::from_millis(ms));
                ms
            },
            done_tx,
            || {},
        );
        (pool, done_rx)
    }

    #[test]
    fn elastic_starts_every_job_at_once_then_shrinks_to_nothing() {
        let (pool, done) = elastic(64, 100);
        for _ in 0..50 {
            pool.submit(200).unwrap();
        }
        // Every job found its own thread (none was idle yet to take a second one).
        assert_eq!(pool.threads(), 50);
        for _ in 0..50 {
            assert_eq!(done.recv().unwrap(), 200);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.threads() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pool.threads(), 0, "idle workers did not exit");
        // And it grows again afterwards.
        pool.submit(1).unwrap();
        assert_eq!(done.recv().unwrap(), 1);
    }

    #[test]
    fn elastic_reuses_idle_workers_and_respects_its_cap() {
        let (pool, done) = elastic(3, 10_000);
        pool.submit(1).unwrap();
        done.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        pool.submit(1).unwrap();
        done.recv().unwrap();
        assert_eq!(pool.threads(), 1, "an idle worker was not reused");
        for _ in 0..10 {
            pool.submit(20).unwrap();
        }
        assert_eq!(pool.threads(), 3);
        for _ in 0..10 {
            done.recv().unwrap();
        }
    }

    #[test]
    fn elastic_survives_a_panicking_job() {
        let (done_tx, done) = mpsc::channel();
        let pool = Elastic::new(
            1,
            Duration::from_secs(10),
            "t",
            |x: u32| {
                assert!(x != 0, "job 0 panics (expected in this test)");
                x
            },
            done_tx,
            || {},
        );
        pool.submit(0).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.threads() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The only thread died with the job; the pool (max 1) must not count it any more.
        assert_eq!(pool.threads(), 0);
        pool.submit(7).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(5)), Ok(7));
    }

    #[test]
    fn elastic_drop_finishes_queued_jobs() {
        let (pool, done) = elastic(2, 10_000);
        for _ in 0..6 {
            pool.submit(5).unwrap();
        }
        drop(pool);
        assert_eq!(done.iter().count(), 6);
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
