//! A fake Salt master request server for tests that need credential checks: a ZeroMQ ROUTER on
//! loopback speaking the clear channel (`{"enc": "clear", "load": {...}}` in, the bare return
//! value out, as in `shared/salt/WIRE.md` §1), answering `mk_token` and `get_token` and
//! counting what reaches it (`set_groups`: the groups a user's tokens name, as `pam` reports
//! them); every other command is refused as an authentication failure. Replies can be held back (`with_delay`) to model a slow eauth
//! backend; how many requests were outstanding at once is recorded.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rmpv::Value;

/// What reached the fake master.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    pub mk_token: AtomicUsize,
    pub get_token: AtomicUsize,
    pub other: AtomicUsize,
    /// The most requests received and not yet answered at one time.
    pub max_outstanding: AtomicUsize,
    /// For each other command (publish, runner, wheel), in order: `"token"` when it carried a
    /// token, `"eauth"` when it carried eauth credentials, `"none"` otherwise.
    pub other_auth: Mutex<Vec<&'static str>>,
}

impl Calls {
    pub(crate) fn mk_token(&self) -> usize {
        self.mk_token.load(Ordering::SeqCst)
    }
    pub(crate) fn get_token(&self) -> usize {
        self.get_token.load(Ordering::SeqCst)
    }
    pub(crate) fn max_outstanding(&self) -> usize {
        self.max_outstanding.load(Ordering::SeqCst)
    }
    pub(crate) fn other(&self) -> usize {
        self.other.load(Ordering::SeqCst)
    }
    pub(crate) fn other_auth(&self) -> Vec<&'static str> {
        self.other_auth.lock().unwrap().clone()
    }
}

#[derive(Debug, Default)]
struct Store {
    users: HashMap<String, String>,
    tokens: HashSet<String>,
    /// The groups `mk_token` reports for a user (as `pam` does).
    groups: HashMap<String, Vec<String>>,
}

/// A running fake master; stopped on drop.
pub(crate) struct FakeMaster {
    pub port: u16,
    pub calls: Arc<Calls>,
    store: Arc<Mutex<Store>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeMaster {
    /// A master knowing `users` (`(name, password)`, eauth `file`), answering at once.
    pub(crate) fn start(users: &[(&str, &str)]) -> Self {
        Self::with_delay(users, Duration::ZERO)
    }

    /// As [`FakeMaster::start`], every reply held back by `delay`.
    pub(crate) fn with_delay(users: &[(&str, &str)], delay: Duration) -> Self {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::ROUTER).unwrap();
        socket.set_linger(0).unwrap();
        socket.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = socket.get_last_endpoint().unwrap().unwrap();
        let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        let store = Arc::new(Mutex::new(Store {
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            tokens: HashSet::new(),
            groups: HashMap::new(),
        }));
        let calls = Arc::new(Calls::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (store, calls, stop) = (store.clone(), calls.clone(), stop.clone());
            std::thread::spawn(move || serve(&ctx, socket, &store, &calls, &stop, delay))
        };
        Self {
            port,
            calls,
            store,
            stop,
            thread: Some(thread),
        }
    }

    /// Makes `mk_token` report `groups` for `user` in the tokens it makes.
    pub(crate) fn set_groups(&self, user: &str, groups: &[&str]) {
        self.store.lock().unwrap().groups.insert(
            user.to_owned(),
            groups.iter().map(|g| g.to_string()).collect(),
        );
    }

    /// Makes `token` valid, as if issued by another client of the master.
    pub(crate) fn issue(&self, token: &str) {
        self.store.lock().unwrap().tokens.insert(token.to_owned());
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    _ctx: &zmq::Context,
    socket: zmq::Socket,
    store: &Mutex<Store>,
    calls: &Calls,
    stop: &AtomicBool,
    delay: Duration,
) {
    let mut pending: Vec<(Instant, Vec<Vec<u8>>)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(at, _)| *at <= now);
        pending = later;
        for (_, frames) in due {
            let _ = socket.send_multipart(frames, 0);
        }
        if socket.poll(zmq::POLLIN, 5).unwrap_or(0) == 0 {
            continue;
        }
        let Ok(mut frames) = socket.recv_multipart(0) else {
            continue;
        };
        // [identity, "", payload] from a REQ socket.
        let Some(payload) = frames.pop() else {
            continue;
        };
        let reply = answer(&payload, store, calls);
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &reply).unwrap();
        frames.push(out);
        pending.push((Instant::now() + delay, frames));
        calls
            .max_outstanding
            .fetch_max(pending.len(), Ordering::SeqCst);
    }
}

fn get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn text(map: &Value, key: &str) -> String {
    get(map, key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn answer(payload: &[u8], store: &Mutex<Store>, calls: &Calls) -> Value {
    let Ok(request) = saltgate::salt::wire::payload::decode_value(&mut &payload[..]) else {
        return Value::from("bad load");
    };
    let Some(load) = get(&request, "load") else {
        return Value::from("bad load");
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let token_map = |token: &str, name: &str| {
        Value::Map(vec![
            (Value::from("token"), Value::from(token)),
            (Value::from("name"), Value::from(name)),
            (Value::from("eauth"), Value::from("file")),
            (Value::from("start"), Value::from(now)),
            (Value::from("expire"), Value::from(now + 3600.0)),
        ])
    };
    let with_groups = |mut token: Value, groups: Option<&Vec<String>>| {
        if let (Value::Map(m), Some(g)) = (&mut token, groups) {
            let list = g.iter().map(|g| Value::from(g.as_str())).collect();
            m.push((Value::from("groups"), Value::Array(list)));
        }
        token
    };
    match text(load, "cmd").as_str() {
        "mk_token" => {
            calls.mk_token.fetch_add(1, Ordering::SeqCst);
            let (user, password) = (text(load, "username"), text(load, "password"));
            let mut store = store.lock().unwrap();
            if store.users.get(&user) != Some(&password) {
                return Value::from("");
            }
            let token = format!("{:040x}", rand::random::<u128>());
            store.tokens.insert(token.clone());
            with_groups(token_map(&token, &user), store.groups.get(&user))
        }
        "get_token" => {
            calls.get_token.fetch_add(1, Ordering::SeqCst);
            let token = text(load, "token");
            if store.lock().unwrap().tokens.contains(&token) {
                token_map(&token, "saltdev")
            } else {
                Value::Map(Vec::new())
            }
        }
        // publish, runner, wheel: this master knows no credentials but its users' logins,
        // and runs nothing.
        _ => {
            calls.other.fetch_add(1, Ordering::SeqCst);
            // A publish carries the credentials in `kwargs`, runner and wheel in the load.
            let has = |key| {
                get(load, key).is_some() || get(load, "kwargs").and_then(|k| get(k, key)).is_some()
            };
            let auth = if has("token") {
                "token"
            } else if has("eauth") {
                "eauth"
            } else {
                "none"
            };
            calls.other_auth.lock().unwrap().push(auth);
            Value::Map(vec![(
                Value::from("error"),
                Value::Map(vec![
                    (Value::from("name"), Value::from("AuthenticationError")),
                    (
                        Value::from("message"),
                        Value::from("Authentication failure of type \"eauth\" occurred."),
                    ),
                ]),
            )])
        }
    }
}
