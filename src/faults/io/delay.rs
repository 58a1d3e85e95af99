//! Delayed operations: an injected latency must not hold a serving thread (one slow file
//! would stall every other request of the volume), so a delayed operation is handed over as a
//! job that a small pool of threads runs once its deadline has passed. The FUSE reply travels
//! with the job; the serving thread goes back to the device at once.
//!
//! Dropping the pool stops its threads; jobs still waiting are dropped with it (a reply
//! dropped unsent answers `EIO`, which is what a request of a gone layer gets anyway).
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    jobs: HashMap<u64, Job>,
    seq: u64,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A pool running jobs at their deadlines.
pub struct Delays {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Delays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delays")
            .field("threads", &self.threads.len())
            .field("pending", &self.pending())
            .finish()
    }
}

impl Delays {
    /// `workers` threads (at least 1) named `<name>-<i>`.
    pub fn new(workers: usize, name: &str) -> std::io::Result<Delays> {
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || work(&s))?,
            );
        }
        Ok(Delays { shared, threads })
    }

    /// Runs `job` on a pool thread once `delay` has passed.
    pub fn after(&self, delay: Duration, job: Job) {
        let at = Instant::now() + delay;
        let mut st = self.shared.lock();
        let id = st.seq;
        st.seq += 1;
        st.jobs.insert(id, job);
        st.heap.push(Reverse((at, id)));
        drop(st);
        self.shared.cv.notify_one();
    }

    /// Jobs waiting for their deadline.
    pub fn pending(&self) -> usize {
        self.shared.lock().jobs.len()
    }

    /// Makes every waiting job due now (in the order of their deadlines): what a layer being
    /// taken off does, so no caller waits out a delay of actions that no longer apply.
    pub fn expedite(&self) {
        let mut st = self.shared.lock();
        let now = Instant::now();
        let mut ids: Vec<(Instant, u64)> = st.heap.drain().map(|Reverse(x)| x).collect();
        ids.sort();
        st.heap = ids.into_iter().map(|(_, id)| Reverse((now, id))).collect();
        drop(st);
        self.shared.cv.notify_all();
    }
}

fn work(s: &Shared) {
    let mut st = s.lock();
    loop {
        if st.stop {
            return;
        }
        let Some(&Reverse((at, id))) = st.heap.peek() else {
            st = s.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let now = Instant::now();
        if at > now {
            st =
                s.cv.wait_timeout(st, at - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            continue;
        }
        st.heap.pop();
        let job = st.jobs.remove(&id);
        drop(st);
        if let Some(job) = job {
            job();
        }
        st = s.lock();
    }
}

impl Drop for Delays {
    fn drop(&mut self) {
        let jobs = {
            let mut st = self.shared.lock();
            st.stop = true;
            st.heap.clear();
            std::mem::take(&mut st.jobs)
        };
        self.shared.cv.notify_all();
        drop(jobs);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_in_deadline_order_without_holding_the_caller() {
        let d = Delays::new(2, "t-delay").unwrap();
        let (tx, rx) = mpsc::channel();
        let t0 = Instant::now();
        for (ms, tag) in [(120u64, "slow"), (10, "fast"), (60, "mid")] {
            let tx = tx.clone();
            d.after(
                Duration::from_millis(ms),
                Box::new(move || tx.send((tag, t0.elapsed())).unwrap()),
            );
        }
        assert!(
            t0.elapsed() < Duration::from_millis(10),
            "after() returns at once"
        );
        let got: Vec<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            ["fast", "mid", "slow"]
        );
        assert!(got[0].1 >= Duration::from_millis(10));
        assert!(got[2].1 >= Duration::from_millis(120));
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn a_long_job_does_not_hold_the_others() {
        let d = Delays::new(2, "t-delay").unwrap();
        let (tx, rx) = mpsc::channel();
        let t0 = Instant::now();
        let tx2 = tx.clone();
        d.after(
            Duration::ZERO,
            Box::new(move || {
                std::thread::sleep(Duration::from_millis(300));
                tx2.send("long").unwrap();
            }),
        );
        d.after(
            Duration::from_millis(20),
            Box::new(move || tx.send("short").unwrap()),
        );
        assert_eq!(rx.recv().unwrap(), "short");
        assert!(t0.elapsed() < Duration::from_millis(250));
        assert_eq!(rx.recv().unwrap(), "long");
    }

    #[test]
    fn expedite_runs_waiting_jobs_now() {
        let d = Delays::new(1, "t-delay").unwrap();
        let (tx, rx) = mpsc::channel();
        for tag in ["first", "second"] {
            let tx = tx.clone();
            let ms = if tag == "first" { 3_600_000 } else { 7_200_000 };
            d.after(
                Duration::from_millis(ms),
                Box::new(move || tx.send(tag).unwrap()),
            );
        }
        let t0 = Instant::now();
        d.expedite();
        assert_eq!(rx.recv().unwrap(), "first");
        assert_eq!(rx.recv().unwrap(), "second");
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn dropping_drops_waiting_jobs() {
        let d = Delays::new(1, "t-delay").unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        d.after(
            Duration::from_secs(3600),
            Box::new(move || tx.send(()).unwrap()),
        );
        assert_eq!(d.pending(), 1);
        let t0 = Instant::now();
        drop(d);
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(rx.recv().is_err(), "the job was dropped, never run");
    }
}
