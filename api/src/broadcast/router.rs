//! Routed fan-out for filtered streams: a released event wakes only the
//! streams that will send it.
//!
//! Unfiltered streams read the broadcast ring; a filtered stream (one
//! author's `?user_id=`, or a reader's `?home=`) has a queue of its own,
//! which the broadcaster fills through an index from author to the local
//! audiences that want the author's events. An audience's author list (the
//! reader and everyone the reader follows, for a home timeline) is held
//! once per instance, shared by all its streams, so a stream costs the same
//! whatever the number of follows. Sending never waits: a stream whose
//! queue (`FEED_CLIENT_BUFFER` events) is full is dropped from its audience,
//! finds its queue closed once it has sent what is in it, and tells its
//! client `event: lagged`, as a stream that fell behind the ring does.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use super::FeedEvent;

/// Who a filtered stream is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Audience {
    /// `?user_id=`: one author's events.
    Author(Box<str>),
    /// `?home=`: the reader's events and those of everyone it follows.
    Home(Box<str>),
}

/// The authors of an audience, at a version of the reader's follows.
#[derive(Debug, Default)]
pub struct Authors {
    /// `follow_versions.version` when `list` was read (0: never changed).
    pub version: i64,
    /// Sorted, without repeats.
    pub list: Vec<String>,
}

impl Authors {
    pub fn new(version: i64, mut list: Vec<String>) -> Self {
        list.sort_unstable();
        list.dedup();
        Authors { version, list }
    }
}

/// One stream's queue of routed events. Not a channel: a tokio `mpsc`
/// channel allocates a block of 32 slots and its bookkeeping up front (about
/// 1 KiB) for every idle stream; this holds nothing until an event comes.
struct Queue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<Arc<FeedEvent>>,
    /// Set when the queue overflowed: the stream is behind.
    closed: bool,
    waker: Option<Waker>,
}

impl Queue {
    fn state(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `event`, or closes the queue when it holds `capacity` already;
    /// false when the stream is behind (closed).
    fn push(&self, event: &Arc<FeedEvent>, capacity: usize) -> bool {
        let mut state = self.state();
        if state.events.len() >= capacity {
            state.closed = true;
        } else {
            state.events.push_back(event.clone());
        }
        let open = !state.closed;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        open
    }

    fn poll_next(&self, cx: &mut std::task::Context<'_>) -> Poll<Option<Arc<FeedEvent>>> {
        let mut state = self.state();
        if let Some(event) = state.events.pop_front() {
            if state.events.is_empty() && state.events.capacity() > SHRINK_ABOVE {
                // A burst grew it: give the memory back while idle.
                state.events.shrink_to(SHRINK_ABOVE);
            }
            return Poll::Ready(Some(event));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// A queue that has emptied keeps at most this many slots.
const SHRINK_ABOVE: usize = 16;

/// A stream's end of its queue; leaves its audience when dropped.
pub struct Routed {
    queue: Arc<Queue>,
    audience: Audience,
    id: u64,
    router: Arc<Router>,
}

impl Routed {
    /// The next event; `None` once the router dropped this stream because
    /// its queue was full (the stream is behind: `event: lagged`), after the
    /// events queued before that.
    pub async fn recv(&mut self) -> Option<Arc<FeedEvent>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Routed::recv`], polled.
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<Arc<FeedEvent>>> {
        self.queue.poll_next(cx)
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        self.router.leave(&self.audience, self.id);
    }
}

struct Entry {
    authors: Arc<Authors>,
    streams: HashMap<u64, Arc<Queue>>,
}

#[derive(Default)]
struct Routes {
    next_id: u64,
    audiences: HashMap<Audience, Entry>,
    /// Author → the audiences that receive its events.
    by_author: HashMap<Box<str>, HashSet<Audience>>,
    streams: usize,
    home_streams: usize,
}

impl Routes {
    fn index(&mut self, audience: &Audience, authors: &Authors) {
        for author in &authors.list {
            self.by_author
                .entry(author.as_str().into())
                .or_default()
                .insert(audience.clone());
        }
    }

    fn unindex(&mut self, audience: &Audience, authors: &Authors) {
        for author in &authors.list {
            if let Some(set) = self.by_author.get_mut(author.as_str()) {
                set.remove(audience);
                if set.is_empty() {
                    self.by_author.remove(author.as_str());
                }
            }
        }
    }

    /// Makes `authors` the audience's list if it is newer than the one held.
    fn update(&mut self, audience: &Audience, authors: Arc<Authors>) {
        let Some(entry) = self.audiences.get_mut(audience) else {
            return;
        };
        if authors.version <= entry.authors.version {
            return;
        }
        let old = std::mem::replace(&mut entry.authors, authors.clone());
        self.unindex(audience, &old);
        self.index(audience, &authors);
    }
}

/// The index from authors to the queues of the streams that want them.
pub struct Router {
    routes: Mutex<Routes>,
    /// Capacity of each stream's queue (`FEED_CLIENT_BUFFER`).
    buffer: usize,
}

impl Router {
    pub fn new(buffer: usize) -> Arc<Self> {
        Arc::new(Router {
            routes: Mutex::default(),
            buffer: buffer.max(1),
        })
    }

    /// The lock, even if a holder panicked: every change leaves the maps whole.
    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a stream to `audience`. The list the stream reads its history
    /// with is returned: the audience's, or `authors` when that is newer.
    pub fn join(self: &Arc<Self>, audience: Audience, authors: Authors) -> (Routed, Arc<Authors>) {
        let mut routes = self.routes();
        let authors = Arc::new(authors);
        if routes.audiences.contains_key(&audience) {
            routes.update(&audience, authors);
        } else {
            routes.index(&audience, &authors);
            routes.audiences.insert(
                audience.clone(),
                Entry {
                    authors,
                    streams: HashMap::new(),
                },
            );
        }
        self.add_stream(&mut routes, audience)
            .expect("the audience was inserted above")
    }

    /// Adds a stream to `audience` if this instance holds its list at
    /// `version` or newer: a connect then reads no list of its own.
    pub fn join_current(
        self: &Arc<Self>,
        audience: Audience,
        version: i64,
    ) -> Option<(Routed, Arc<Authors>)> {
        let mut routes = self.routes();
        if routes.audiences.get(&audience)?.authors.version < version {
            return None;
        }
        self.add_stream(&mut routes, audience)
    }

    /// A new stream of an audience held here; `None` when it is not.
    fn add_stream(
        self: &Arc<Self>,
        routes: &mut Routes,
        audience: Audience,
    ) -> Option<(Routed, Arc<Authors>)> {
        let queue = Arc::new(Queue {
            state: Mutex::default(),
        });
        let id = routes.next_id;
        let entry = routes.audiences.get_mut(&audience)?;
        entry.streams.insert(id, queue.clone());
        let authors = entry.authors.clone();
        routes.next_id += 1;
        routes.streams += 1;
        if matches!(audience, Audience::Home(_)) {
            routes.home_streams += 1;
        }
        let routed = Routed {
            queue,
            audience,
            id,
            router: self.clone(),
        };
        Some((routed, authors))
    }

    fn leave(&self, audience: &Audience, id: u64) {
        let mut routes = self.routes();
        routes.streams -= 1;
        if matches!(audience, Audience::Home(_)) {
            routes.home_streams -= 1;
        }
        let Some(entry) = routes.audiences.get_mut(audience) else {
            return;
        };
        entry.streams.remove(&id);
        if entry.streams.is_empty() {
            if let Some(entry) = routes.audiences.remove(audience) {
                routes.unindex(audience, &entry.authors);
            }
        }
    }

    /// Gives `event` to the queue of every stream whose audience wants its
    /// author; a full queue drops its stream (it is behind).
    pub fn route(&self, event: &Arc<FeedEvent>) {
        let mut guard = self.routes();
        let routes = &mut *guard;
        let Some(audiences) = routes.by_author.get(&event.user_id) else {
            return;
        };
        for audience in audiences {
            if let Some(entry) = routes.audiences.get_mut(audience) {
                entry
                    .streams
                    .retain(|_, queue| queue.push(event, self.buffer));
            }
        }
    }

    /// A newer author list for a home reader's streams.
    pub fn update_home(&self, reader: &str, authors: Authors) {
        self.routes()
            .update(&Audience::Home(reader.into()), Arc::new(authors));
    }

    /// The home readers with open streams here, with the version of the
    /// follows held for each.
    pub fn home_readers(&self) -> Vec<(String, i64)> {
        self.routes()
            .audiences
            .iter()
            .filter_map(|(audience, entry)| match audience {
                Audience::Home(reader) => Some((reader.to_string(), entry.authors.version)),
                Audience::Author(_) => None,
            })
            .collect()
    }

    /// `(filtered streams, home streams, home readers)` open here.
    pub fn counts(&self) -> (usize, usize, usize) {
        let routes = self.routes();
        let readers = routes
            .audiences
            .keys()
            .filter(|a| matches!(a, Audience::Home(_)))
            .count();
        (routes.streams, routes.home_streams, readers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, author: &str) -> Arc<FeedEvent> {
        Arc::new(FeedEvent {
            seq,
            name: "message",
            user_id: author.into(),
            cursor: seq.to_string().into(),
            data: "{}".into(),
        })
    }

    fn authors(version: i64, list: &[&str]) -> Authors {
        Authors::new(version, list.iter().map(|s| (*s).to_owned()).collect())
    }

    #[tokio::test]
    async fn an_event_reaches_only_the_audiences_of_its_author() {
        let router = Router::new(8);
        let (mut home, list) =
            router.join(Audience::Home("ann".into()), authors(1, &["bob", "ann"]));
        assert_eq!(list.list, ["ann", "bob"]);
        let (mut carl, _) = router.join(Audience::Author("carl".into()), authors(0, &["carl"]));
        router.route(&event(1, "carl"));
        router.route(&event(2, "bob"));
        router.route(&event(3, "dan"));
        router.route(&event(4, "ann"));
        assert_eq!(carl.recv().await.map(|e| e.seq), Some(1));
        assert_eq!(home.recv().await.map(|e| e.seq), Some(2));
        assert_eq!(home.recv().await.map(|e| e.seq), Some(4));
        assert!(home.queue.state().events.is_empty(), "nothing else");
        assert!(carl.queue.state().events.is_empty(), "nothing else");
    }

    #[tokio::test]
    async fn a_newer_follow_list_reroutes_and_an_older_one_is_ignored() {
        let router = Router::new(8);
        let (mut home, _) = router.join(Audience::Home("ann".into()), authors(1, &["ann", "bob"]));
        router.update_home("ann", authors(2, &["ann", "carl"]));
        router.update_home("ann", authors(1, &["ann", "bob"]));
        router.route(&event(1, "bob"));
        router.route(&event(2, "carl"));
        assert_eq!(home.recv().await.map(|e| e.seq), Some(2));
        assert_eq!(router.home_readers(), [("ann".to_owned(), 2)]);
        // A second stream of the reader shares the newer list.
        let (_second, list) = router.join(Audience::Home("ann".into()), authors(1, &["ann"]));
        assert_eq!(list.version, 2);
        assert_eq!(router.counts(), (2, 2, 1));
    }

    #[tokio::test]
    async fn a_connect_reuses_a_list_held_at_its_version_or_newer() {
        let router = Router::new(8);
        let home = || Audience::Home("ann".into());
        assert!(router.join_current(home(), 0).is_none(), "nothing held yet");
        let (_first, _) = router.join(home(), authors(3, &["ann", "bob"]));
        assert!(router.join_current(home(), 4).is_none(), "a newer version");
        let (mut second, list) = router.join_current(home(), 3).expect("held at 3");
        assert_eq!(list.list, ["ann", "bob"]);
        assert_eq!(router.counts(), (2, 2, 1));
        router.route(&event(1, "bob"));
        assert_eq!(second.recv().await.map(|e| e.seq), Some(1));
    }

    #[tokio::test]
    async fn a_waiting_stream_is_woken_by_its_next_event() {
        let router = Router::new(8);
        let (mut stream, _) = router.join(Audience::Author("bob".into()), authors(0, &["bob"]));
        let waiting = tokio::spawn(async move { stream.recv().await.map(|e| e.seq) });
        // Let the receiver park before the event comes.
        tokio::task::yield_now().await;
        router.route(&event(7, "bob"));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("the receiving task");
        assert_eq!(got, Some(7));
    }

    #[tokio::test]
    async fn a_full_queue_drops_its_stream_and_leaving_empties_the_index() {
        let router = Router::new(2);
        let (mut slow, _) = router.join(Audience::Author("bob".into()), authors(0, &["bob"]));
        for seq in 1..=3 {
            router.route(&event(seq, "bob"));
        }
        assert_eq!(slow.recv().await.map(|e| e.seq), Some(1));
        assert_eq!(slow.recv().await.map(|e| e.seq), Some(2));
        assert!(
            slow.recv().await.is_none(),
            "dropped once its queue was full"
        );
        drop(slow);
        assert_eq!(router.counts(), (0, 0, 0));
        let routes = router.routes();
        assert!(routes.by_author.is_empty() && routes.audiences.is_empty());
    }
}
