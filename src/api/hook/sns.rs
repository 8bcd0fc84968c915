//! Amazon SNS: fetching (and caching) signing certificates, the async verification entry
//! [`verify_sns`], and subscription confirmation.
//!
//! Defends the outbound side of SNS verification. The only URLs ever fetched are
//! [`SnsUrl`]s, which exist only after `security::signature::sns`'s strict host check, so a
//! forged message cannot make saltgate connect anywhere but `https://sns.<region>.amazonaws.com`
//! (SSRF). Fetches go over rustls with the webpki roots, no redirects, HTTPS only, a 5 s total
//! timeout and a 64 KiB body cap. The cache is bounded (64 entries, oldest evicted) with a TTL
//! (1 h), and is passed in (through `AppState`), never a global. Failed fetches are not cached.
//! The transport is the [`SnsHttp`] trait so tests serve certificates from memory.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use http::HeaderMap;
use tokio::time::Instant;

use crate::api::error::ApiError;
use crate::security::signature::sns::{MAX_CERT, Sns, SnsUrl, SnsVerified};
use crate::security::{Verifier, VerifyError};

/// Certificates cached at most.
pub const CERT_CAPACITY: usize = 64;
/// How long a fetched certificate is reused.
pub const CERT_TTL: Duration = Duration::from_secs(3600);
/// Whole-request timeout for certificate fetches and confirmations.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `ConfirmSubscription` response read (a short XML document).
pub const MAX_CONFIRM_BYTES: usize = 64 * 1024;

/// Why a GET to an SNS URL failed. Logged; never shown to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnsFetchError {
    /// The HTTP client could not be built (TLS backend).
    #[error("HTTP client unavailable")]
    Client,
    /// Connect, TLS, timeout or read failure.
    #[error("request failed: {0}")]
    Request(String),
    /// A status other than 2xx (redirects included: they are not followed).
    #[error("unexpected status {0}")]
    Status(u16),
    /// The response exceeded the cap.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// GETs a checked SNS URL: 2xx only, at most `max` body bytes.
pub trait SnsHttp: Send + Sync + fmt::Debug {
    /// Fetches `url`'s body.
    fn get<'a>(
        &'a self,
        url: &'a SnsUrl,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, SnsFetchError>>;
}

/// The production transport: reqwest over rustls.
#[derive(Debug, Clone)]
pub struct ReqwestHttp {
    client: reqwest::Client,
}

impl ReqwestHttp {
    /// HTTPS only, no redirects, [`FETCH_TIMEOUT`].
    pub fn new() -> Result<ReqwestHttp, SnsFetchError> {
        let client = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .user_agent(concat!("saltgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| SnsFetchError::Client)?;
        Ok(ReqwestHttp { client })
    }
}

impl SnsHttp for ReqwestHttp {
    fn get<'a>(
        &'a self,
        url: &'a SnsUrl,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, SnsFetchError>> {
        Box::pin(async move {
            let failed = |e: reqwest::Error| SnsFetchError::Request(e.without_url().to_string());
            let mut response = self.client.get(url.as_str()).send().await.map_err(failed)?;
            let status = response.status();
            if !status.is_success() {
                return Err(SnsFetchError::Status(status.as_u16()));
            }
            if response
                .content_length()
                .is_some_and(|len| len > max as u64)
            {
                return Err(SnsFetchError::TooLarge(max));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(failed)? {
                if body.len() + chunk.len() > max {
                    return Err(SnsFetchError::TooLarge(max));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        })
    }
}

/// URL → (fetched at, certificate bytes).
type Entries = HashMap<String, (Instant, Arc<Vec<u8>>)>;

/// Bounded, TTL'd cache of signing certificates by URL, over an [`SnsHttp`].
pub struct CertCache {
    http: Arc<dyn SnsHttp>,
    capacity: usize,
    ttl: Duration,
    entries: Mutex<Entries>,
}

impl fmt::Debug for CertCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertCache")
            .field("http", &self.http)
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("len", &self.len())
            .finish()
    }
}

impl CertCache {
    /// [`CERT_CAPACITY`] entries for [`CERT_TTL`].
    pub fn new(http: Arc<dyn SnsHttp>) -> CertCache {
        CertCache::with_limits(http, CERT_CAPACITY, CERT_TTL)
    }

    /// A cache of at most `capacity` (at least 1) entries, each reused for `ttl`.
    pub fn with_limits(http: Arc<dyn SnsHttp>, capacity: usize, ttl: Duration) -> CertCache {
        CertCache {
            http,
            capacity: capacity.max(1),
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The transport, for [`confirm_subscription`].
    pub fn http(&self) -> &dyn SnsHttp {
        self.http.as_ref()
    }

    /// Entries currently held (expired ones included until the next insert).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The certificate at `url`: cached when fresh, else fetched (at most [`MAX_CERT`] bytes).
    /// Concurrent misses for one URL may each fetch; the bound is the hook's rate limit.
    pub async fn get(&self, url: &SnsUrl) -> Result<Arc<Vec<u8>>, SnsFetchError> {
        if let Some((at, cert)) = self.lock().get(url.as_str()) {
            if at.elapsed() < self.ttl {
                return Ok(Arc::clone(cert));
            }
        }
        let cert = Arc::new(self.http.get(url, MAX_CERT).await?);
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        if entries.len() >= self.capacity && !entries.contains_key(url.as_str()) {
            let oldest = entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(url.as_str().to_owned(), (now, Arc::clone(&cert)));
        Ok(cert)
    }

    /// Drops `url`'s entry, so the next delivery fetches it again.
    pub fn evict(&self, url: &SnsUrl) {
        self.lock().remove(url.as_str());
    }

    /// A panic while holding the lock leaves the map consistent (every update is one call).
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The SNS step of the hook pipeline: checks `SigningCertURL` and the topic, fetches the
/// certificate through `cache`, then verifies `body` at `now_unix`. A fetch failure is
/// [`VerifyError::CertUnavailable`] (the sender is not at fault: answer 503 so SNS retries);
/// a certificate that fails its checks is evicted so the next delivery refetches it.
pub async fn verify_sns(
    verifier: &Sns,
    cache: &CertCache,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<SnsVerified, VerifyError> {
    let url = verifier.signing_cert_url(body)?;
    let cert = cache.get(&url).await.map_err(|error| {
        tracing::warn!(%error, url = ?url, "Fetching the SNS signing certificate failed");
        VerifyError::CertUnavailable
    })?;
    let verified = verifier.verify(headers, body, now_unix, &cert);
    if matches!(verified, Err(VerifyError::BadCertificate(_))) {
        cache.evict(&url);
    }
    verified
}

/// Confirms a subscription: GETs the (already host-checked) `SubscribeURL` of a verified
/// `SubscriptionConfirmation`. For rules with `confirm_subscriptions: true`.
pub async fn confirm_subscription(
    cache: &CertCache,
    subscribe_url: &SnsUrl,
) -> Result<(), SnsFetchError> {
    cache
        .http()
        .get(subscribe_url, MAX_CONFIRM_BYTES)
        .await
        .map(|_| ())
}

/// An SNS `SubscriptionConfirmation` is confirmed here when the rule opts in (GET of the
/// checked `SubscribeURL`), and then not fired; otherwise it is fired for the Reactor.
pub async fn confirm_sns(
    certs: Option<&CertCache>,
    verifier: &Verifier,
    sns: &SnsVerified,
) -> Result<Option<serde_json::Value>, ApiError> {
    let (Verifier::Sns(rule), Some(url)) = (verifier, &sns.subscribe_url) else {
        return Ok(None);
    };
    if !rule.confirm_subscriptions() {
        return Ok(None);
    }
    let cache = certs.ok_or(ApiError::Unavailable("No HTTPS client for SNS"))?;
    confirm_subscription(cache, url).await.map_err(|e| {
        tracing::warn!(topic = %sns.topic_arn, error = ?e, "SNS subscription could not be confirmed");
        ApiError::Unavailable("The SNS subscription could not be confirmed")
    })?;
    tracing::info!(topic = %sns.topic_arn, "Confirmed an SNS subscription");
    Ok(Some(
        serde_json::json!({"success": true, "confirmed": true}),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::security::signature::sns::test_support::*;
    use crate::security::signature::sns::{MessageType, UrlKind, check_url};

    /// Serves fixed bodies by URL from memory and counts requests.
    #[derive(Debug, Default)]
    struct FakeHttp {
        bodies: HashMap<String, Vec<u8>>,
        calls: AtomicUsize,
        seen: Mutex<Vec<(String, usize)>>,
    }

    impl FakeHttp {
        fn serving(pairs: &[(&str, &[u8])]) -> Arc<FakeHttp> {
            Arc::new(FakeHttp {
                bodies: pairs
                    .iter()
                    .map(|(u, b)| ((*u).to_owned(), b.to_vec()))
                    .collect(),
                ..FakeHttp::default()
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl SnsHttp for FakeHttp {
        fn get<'a>(
            &'a self,
            url: &'a SnsUrl,
            max: usize,
        ) -> BoxFuture<'a, Result<Vec<u8>, SnsFetchError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.seen
                .lock()
                .unwrap()
                .push((url.as_str().to_owned(), max));
            let found = self.bodies.get(url.as_str()).cloned();
            Box::pin(async move { found.ok_or(SnsFetchError::Status(404)) })
        }
    }

    fn url(s: &str) -> SnsUrl {
        let suffixes = ["amazonaws.com".to_owned()];
        check_url(s, &suffixes, UrlKind::Certificate)
            .or_else(|| check_url(s, &suffixes, UrlKind::Action))
            .unwrap()
    }

    fn sns() -> Sns {
        Sns::new(vec![TOPIC.to_owned()]).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn cache_hits_expires_and_does_not_keep_failures() {
        let http = FakeHttp::serving(&[(CERT_URL, LEAF_PEM)]);
        let cache = CertCache::new(http.clone());
        let u = url(CERT_URL);
        assert_eq!(cache.get(&u).await.unwrap().as_slice(), LEAF_PEM);
        assert_eq!(cache.get(&u).await.unwrap().as_slice(), LEAF_PEM);
        assert_eq!(http.calls(), 1);
        assert_eq!(http.seen.lock().unwrap()[0].1, MAX_CERT);
        tokio::time::advance(CERT_TTL).await;
        cache.get(&u).await.unwrap();
        assert_eq!(http.calls(), 2);

        let missing = url("https://sns.eu-west-1.amazonaws.com/missing.pem");
        for _ in 0..2 {
            assert_eq!(cache.get(&missing).await, Err(SnsFetchError::Status(404)));
        }
        assert_eq!(http.calls(), 4);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cache_is_bounded_and_evicts_the_oldest() {
        let urls: Vec<String> = (0..3)
            .map(|i| format!("https://sns.eu-west-1.amazonaws.com/c{i}.pem"))
            .collect();
        let pairs: Vec<(&str, &[u8])> = urls.iter().map(|u| (u.as_str(), LEAF_DER)).collect();
        let http = FakeHttp::serving(&pairs);
        let cache = CertCache::with_limits(http.clone(), 2, CERT_TTL);
        for u in &urls {
            cache.get(&url(u)).await.unwrap();
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(cache.len(), 2);
        cache.get(&url(&urls[2])).await.unwrap();
        cache.get(&url(&urls[1])).await.unwrap();
        assert_eq!(http.calls(), 3, "the two newest stay cached");
        cache.get(&url(&urls[0])).await.unwrap();
        assert_eq!(http.calls(), 4, "the oldest was evicted");
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn verify_sns_end_to_end() {
        let http = FakeHttp::serving(&[(CERT_URL, LEAF_PEM)]);
        let cache = CertCache::new(http.clone());
        for kind in [
            "Notification",
            "SubscriptionConfirmation",
            "UnsubscribeConfirmation",
        ] {
            let b = body(&sign(message(kind, "2")));
            let v = verify_sns(&sns(), &cache, &HeaderMap::new(), &b, NOW)
                .await
                .unwrap();
            assert_eq!(v.message_type.as_str(), kind);
        }
        assert_eq!(http.calls(), 1);
    }

    #[tokio::test]
    async fn verify_sns_refuses_before_fetching() {
        let http = FakeHttp::serving(&[]);
        let cache = CertCache::new(http.clone());
        let evil = sign(
            message("Notification", "2")
                .into_iter()
                .chain([(
                    "SigningCertURL".to_owned(),
                    json!("https://sns.us-east-1.amazonaws.com.evil.com/x.pem"),
                )])
                .collect(),
        );
        let other_topic = sign(
            message("Notification", "2")
                .into_iter()
                .chain([(
                    "TopicArn".to_owned(),
                    json!("arn:aws:sns:eu-west-1:123456789012:other"),
                )])
                .collect(),
        );
        let cases = [
            (body(&evil), VerifyError::UntrustedUrl("SigningCertURL")),
            (body(&other_topic), VerifyError::TopicNotAllowed),
            (
                b"{".to_vec(),
                VerifyError::MalformedBody("not an SNS JSON message"),
            ),
        ];
        for (b, expected) in cases {
            assert_eq!(
                verify_sns(&sns(), &cache, &HeaderMap::new(), &b, NOW).await,
                Err(expected)
            );
        }
        assert_eq!(http.calls(), 0);
    }

    #[tokio::test]
    async fn verify_sns_fetch_failure_and_bad_cert_eviction() {
        let b = body(&sign(message("Notification", "2")));
        let cache = CertCache::new(FakeHttp::serving(&[]));
        assert_eq!(
            verify_sns(&sns(), &cache, &HeaderMap::new(), &b, NOW).await,
            Err(VerifyError::CertUnavailable)
        );

        let http = FakeHttp::serving(&[(CERT_URL, b"not a certificate")]);
        let cache = CertCache::new(http.clone());
        for _ in 0..2 {
            assert_eq!(
                verify_sns(&sns(), &cache, &HeaderMap::new(), &b, NOW).await,
                Err(VerifyError::BadCertificate("not an X.509 certificate"))
            );
        }
        assert_eq!(http.calls(), 2, "a bad certificate is not kept");
        assert!(cache.is_empty());

        // a valid certificate of another key stays cached: the message is what is wrong
        let http = FakeHttp::serving(&[(CERT_URL, CA_PEM)]);
        let cache = CertCache::new(http);
        assert_eq!(
            verify_sns(&sns(), &cache, &HeaderMap::new(), &b, NOW).await,
            Err(VerifyError::Mismatch)
        );
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn confirm_subscription_gets_the_checked_url() {
        let http = FakeHttp::serving(&[(SUBSCRIBE_URL, b"<ConfirmSubscriptionResponse/>")]);
        let cache = CertCache::new(http.clone());
        let b = body(&sign(message("SubscriptionConfirmation", "1")));
        let v = verify_sns(&sns(), &cache, &HeaderMap::new(), &b, NOW).await;
        assert!(v.is_err(), "no certificate served");
        let v = sns().verify(&HeaderMap::new(), &b, NOW, LEAF_PEM).unwrap();
        assert_eq!(v.message_type, MessageType::SubscriptionConfirmation);
        let subscribe = v.subscribe_url.unwrap();
        confirm_subscription(&cache, &subscribe).await.unwrap();
        let seen = http.seen.lock().unwrap().clone();
        assert_eq!(
            seen.last(),
            Some(&(SUBSCRIBE_URL.to_owned(), MAX_CONFIRM_BYTES))
        );

        let cache = CertCache::new(FakeHttp::serving(&[]));
        assert_eq!(
            confirm_subscription(&cache, &subscribe).await,
            Err(SnsFetchError::Status(404))
        );
    }

    #[test]
    fn reqwest_transport_builds() {
        assert!(ReqwestHttp::new().is_ok());
    }
}
