//! Plausible, varied tweets and user names, from templates and word lists.

use rand::seq::IndexedRandom as _;
use rand::Rng;

const ADJECTIVES: &[&str] = &[
    "sleepy", "curious", "brave", "quiet", "sunny", "clever", "lucky", "fuzzy", "swift", "calm",
    "bold", "witty", "gentle", "eager", "jolly", "mellow",
];
const ANIMALS: &[&str] = &[
    "otter", "falcon", "panda", "lynx", "koala", "heron", "badger", "fox", "whale", "gecko",
    "raven", "bison", "lemur", "moose", "orca", "wombat",
];
const OPENERS: &[&str] = &[
    "Just",
    "Finally",
    "Today I",
    "Can't believe I",
    "Yesterday I",
    "This morning I",
    "Quick update: I",
    "At last I",
];
const TAKES: &[&str] = &[
    "Hot take:",
    "Unpopular opinion:",
    "Honestly,",
    "Reminder:",
    "PSA:",
];
const ACTIONS: &[&str] = &[
    "shipped a new feature",
    "fixed a bug that haunted me for a week",
    "drank my third coffee",
    "went for a run by the river",
    "read a great paper on consensus",
    "refactored the whole module",
    "deployed on a Friday",
    "learned a new Rust trick",
    "cooked pasta from scratch",
    "watched the sunrise",
    "finished that book",
    "wrote more tests than code",
    "migrated the database without downtime",
    "adopted a very loud cat",
    "tried the new ramen place",
];
const TOPICS: &[&str] = &[
    "distributed systems",
    "Kafka consumer groups",
    "borrow checkers",
    "sourdough",
    "indie games",
    "mechanical keyboards",
    "the weather",
    "open source",
    "coffee brewing",
    "trail running",
    "CockroachDB",
    "server-sent events",
    "async Rust",
    "jazz records",
];
const FEELINGS: &[&str] = &[
    "and it feels great",
    "and I regret nothing",
    "send help",
    "10/10 would do again",
    "not sure how to feel",
    "best decision this week",
    "why is it always like this",
    "and the day is not even over",
    "mood",
    "so that happened",
];
const HASHTAGS: &[&str] = &[
    "#rustlang",
    "#devlife",
    "#coffee",
    "#weekend",
    "#til",
    "#kafka",
    "#opensource",
    "#running",
    "#foodie",
    "#mondaymotivation",
    "#streaming",
    "#sre",
];
const EMOJI: &[&str] = &[
    "🚀", "☕", "🎉", "🔥", "😅", "🦀", "✨", "🌅", "🤔", "💡", "🐈", "🍜",
];

/// The user names of `count` simulated users, stable across runs.
pub fn user_names(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let adj = ADJECTIVES[i % ADJECTIVES.len()];
            let animal = ANIMALS[(i / ADJECTIVES.len() + i) % ANIMALS.len()];
            format!("{adj}_{animal}_{}", i + 1)
        })
        .collect()
}

/// Who follows whom among `users` simulated users: each follows `per_user`
/// others (fewer when there are not enough), chosen with Zipf weights
/// (`1 / (rank + 1)`, rank = the user's index), so a few users have many
/// followers and most have few, the heavy tail of real follower counts.
/// Pairs of indexes, `(follower, followed)`, without repeats or self-follows.
pub fn follow_graph<R: Rng + ?Sized>(
    rng: &mut R,
    users: usize,
    per_user: usize,
) -> Vec<(usize, usize)> {
    let cumulative: Vec<f64> = (0..users)
        .scan(0.0, |sum, rank| {
            *sum += 1.0 / (rank as f64 + 1.0);
            Some(*sum)
        })
        .collect();
    let total = cumulative.last().copied().unwrap_or_default();
    let per_user = per_user.min(users.saturating_sub(1));
    let mut edges = Vec::with_capacity(users * per_user);
    for follower in 0..users {
        let mut chosen = std::collections::BTreeSet::new();
        // Rejections (self, repeats) are rare once there are a few users;
        // the bound only keeps a tiny graph from spinning.
        for _ in 0..per_user * 50 {
            if chosen.len() == per_user {
                break;
            }
            let x = rng.random_range(0.0..total);
            let target = cumulative.partition_point(|&c| c <= x).min(users - 1);
            if target != follower {
                chosen.insert(target);
            }
        }
        edges.extend(chosen.into_iter().map(|t| (follower, t)));
    }
    edges
}

fn pick<R: Rng + ?Sized>(rng: &mut R, words: &'static [&'static str]) -> &'static str {
    words.choose(rng).copied().unwrap_or_default()
}

/// One tweet: always valid under the API's rules (docs/API.md: 1 to 280 characters, no control characters).
pub fn tweet<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut text = match rng.random_range(0..4) {
        0 => format!(
            "{} {}, {}",
            pick(rng, OPENERS),
            pick(rng, ACTIONS),
            pick(rng, FEELINGS)
        ),
        1 => format!(
            "Thinking about {} again. {}",
            pick(rng, TOPICS),
            pick(rng, FEELINGS)
        ),
        2 => format!(
            "{} {} deserves more love.",
            pick(rng, TAKES),
            pick(rng, TOPICS)
        ),
        _ => format!(
            "{} {}, then spent an hour on {}.",
            pick(rng, OPENERS),
            pick(rng, ACTIONS),
            pick(rng, TOPICS)
        ),
    };
    if rng.random_bool(0.5) {
        text.push(' ');
        text.push_str(pick(rng, EMOJI));
    }
    for _ in 0..rng.random_range(0..3) {
        text.push(' ');
        text.push_str(pick(rng, HASHTAGS));
    }
    // Templates are far below the limit; keep the guarantee explicit anyway.
    text.chars().take(280).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tweets_are_valid_and_varied() {
        let mut rng = rand::rng();
        let tweets: Vec<String> = (0..500).map(|_| tweet(&mut rng)).collect();
        for t in &tweets {
            let n = t.trim().chars().count();
            assert!((1..=280).contains(&n), "{t}");
            assert!(!t.chars().any(|c| c.is_control()), "{t}");
        }
        let distinct: HashSet<&String> = tweets.iter().collect();
        assert!(
            distinct.len() > 300,
            "only {} distinct tweets out of 500",
            distinct.len()
        );
    }

    #[test]
    fn the_follow_graph_is_skewed_without_self_follows_or_repeats() {
        let mut rng = rand::rng();
        let edges = follow_graph(&mut rng, 1000, 20);
        assert_eq!(edges.len(), 1000 * 20);
        let distinct: HashSet<&(usize, usize)> = edges.iter().collect();
        assert_eq!(distinct.len(), edges.len(), "no repeats");
        assert!(edges.iter().all(|(a, b)| a != b), "no self-follows");
        let mut followers = vec![0usize; 1000];
        for (_, b) in &edges {
            followers[*b] += 1;
        }
        // Zipf: the first user is followed by far more than the median one.
        let mut sorted = followers.clone();
        sorted.sort_unstable();
        assert!(
            followers[0] > 10 * sorted[500].max(1),
            "{} vs {}",
            followers[0],
            sorted[500]
        );
        // Three users: each follows the other two.
        assert_eq!(follow_graph(&mut rng, 3, 5).len(), 6);
        assert!(follow_graph(&mut rng, 1, 5).is_empty());
    }

    #[test]
    fn user_names_are_valid_and_distinct() {
        let names = user_names(300);
        let distinct: HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), 300);
        for n in &names {
            assert!(
                n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{n}"
            );
        }
    }
}
