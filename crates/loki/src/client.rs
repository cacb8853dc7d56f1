//! The async HTTP adapter: sends what the sans-IO modules build and hands the answers back to
//! them. It never retries: the caller's spool decides when to send a body again.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use rustls_platform_verifier::BuilderVerifierExt;

use crate::push::{
    body_text, classify_push_response, PushError, PushOutcome, RetryAfter, PUSH_CONTENT_TYPE, PUSH_PATH,
};
use crate::query::{
    label_values_path, parse_label_values, parse_query_page, parse_query_response, Page, QueryError,
    QueryRange, QueryResponse, CATEGORIZE_LABELS, ENCODING_FLAGS_HEADER,
};
use teelog_core::timestamp::UnixNanos;

/// A push answer is a status and at most a message; more than this is not read.
const PUSH_RESPONSE_LIMIT: usize = 1 << 20;

/// How to reach Loki.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Sent as `X-Scope-OrgID`, for a multi-tenant Loki.
    pub tenant: Option<String>,
    /// Sent as `Authorization: Bearer …`.
    pub bearer_token: Option<String>,
    /// For the whole request, connecting included.
    pub timeout: Duration,
    /// Added to every request (e.g. a gateway's own authentication header).
    pub extra_headers: Vec<(String, String)>,
    /// The largest query response read; a page of 5000 lines of up to 256 kB can be larger.
    pub max_response_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            tenant: None,
            bearer_token: None,
            timeout: Duration::from_secs(30),
            extra_headers: Vec::new(),
            max_response_bytes: 256 << 20,
        }
    }
}

/// Why a call to Loki failed. [`LokiError::is_retryable`] tells which are worth trying again.
#[derive(Debug, thiserror::Error)]
pub enum LokiError {
    /// The base URL does not parse, or is not http(s).
    #[error("Loki base URL {url:?}: {why}")]
    BaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// A configured header (tenant, token, extra header) is not a valid HTTP header.
    #[error("HTTP header {name:?}: {why}")]
    Header {
        /// The header's name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("could not set up the HTTP client: {0}")]
    Setup(String),
    /// A push was refused or failed.
    #[error(transparent)]
    Push(#[from] PushError),
    /// No answer: connection refused, timeout, TLS failure.
    #[error("could not reach Loki at {url}: {why}")]
    Transport {
        /// The URL called.
        url: String,
        /// What the HTTP client said.
        why: String,
    },
    /// A query answered with an HTTP error.
    #[error("{url}: HTTP {status}: {message}")]
    QueryStatus {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// When to try again, if Loki said (`Retry-After`).
        retry_after: Option<RetryAfter>,
        /// The start of the response body, which says why.
        message: String,
    },
    /// A response longer than [`ClientOptions::max_response_bytes`]; it was not read further.
    #[error("the response is over {limit} bytes (ClientOptions::max_response_bytes): ask for fewer entries")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A query's answer is not of the shape Loki's API gives.
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl LokiError {
    /// Whether the same request may succeed later (an unreachable or overloaded Loki).
    pub fn is_retryable(&self) -> bool {
        match self {
            LokiError::Transport { .. } => true,
            LokiError::QueryStatus { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// An error with its causes, which is where reqwest says what actually failed
/// ("connection refused", "certificate expired").
pub fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A Loki client: one connection pool, the headers of `ClientOptions` on every request.
#[derive(Debug, Clone)]
pub struct LokiClient {
    http: reqwest::Client,
    base: String,
    max_response_bytes: usize,
}

fn header(name: &str, value: &str, sensitive: bool) -> Result<(HeaderName, HeaderValue), LokiError> {
    let bad = |why: String| LokiError::Header { name: name.to_string(), why };
    let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let mut header_value = HeaderValue::from_str(value)
        .map_err(|_| bad("the value must be visible ASCII (no control characters)".into()))?;
    header_value.set_sensitive(sensitive);
    Ok((header_name, header_value))
}

/// TLS with the ring provider (no aws-lc) and the system's trusted roots. A plain-http base URL
/// gets a configuration that trusts nothing, so that a redirect to https cannot slip through.
fn tls_config(https: bool) -> Result<rustls::ClientConfig, LokiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LokiError::Setup(e.to_string()))?;
    if https {
        let verifier = builder.with_platform_verifier().map_err(|e| {
            LokiError::Setup(format!("{e}: install the system's CA certificates (ca-certificates)"))
        })?;
        Ok(verifier.with_no_client_auth())
    } else {
        Ok(builder.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth())
    }
}

/// A reqwest client for `url` (http or https) with the TLS setup of [`LokiClient`] and the
/// headers, bearer token and timeout of `options`. Other teelog HTTP exporters (the ship
/// daemon's OTLP sink) use it too, so that they all trust the same roots the same way.
pub fn http_client(url: &reqwest::Url, options: &ClientOptions) -> Result<reqwest::Client, LokiError> {
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(LokiError::BaseUrl {
                url: url.to_string(),
                why: format!("scheme {other:?}: use http or https"),
            })
        }
    };
    let mut headers = HeaderMap::new();
    if let Some(tenant) = &options.tenant {
        let (name, value) = header("X-Scope-OrgID", tenant, false)?;
        headers.insert(name, value);
    }
    if let Some(token) = &options.bearer_token {
        let (_, value) = header(AUTHORIZATION.as_str(), &format!("Bearer {token}"), true)?;
        headers.insert(AUTHORIZATION, value);
    }
    for (name, value) in &options.extra_headers {
        let (name, value) = header(name, value, false)?;
        headers.append(name, value);
    }
    reqwest::Client::builder()
        .timeout(options.timeout)
        .default_headers(headers)
        // A redirected POST could land anywhere; Loki and OTLP receivers never redirect.
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(tls_config(https)?)
        .build()
        .map_err(|e| LokiError::Setup(error_chain(&e)))
}

impl LokiClient {
    /// `base_url` is Loki's (or its gateway's) root, e.g. `https://loki.example:3100`; a path
    /// prefix is kept.
    pub fn new(base_url: &str, options: ClientOptions) -> Result<Self, LokiError> {
        let bad_url = |why: String| LokiError::BaseUrl { url: base_url.to_string(), why };
        let url = reqwest::Url::parse(base_url).map_err(|e| bad_url(e.to_string()))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad_url("give the root URL without a query or fragment".into()));
        }
        let http = http_client(&url, &options)?;
        Ok(Self {
            http,
            base: url.as_str().trim_end_matches('/').to_string(),
            max_response_bytes: options.max_response_bytes,
        })
    }

    /// Sends one push body (from [`crate::encode_push`]). An unreachable Loki is a
    /// [`PushOutcome::Retry`], like a 429 or 5xx; only answers that repeating cannot change are
    /// errors.
    pub async fn push(&self, body: Vec<u8>) -> Result<PushOutcome, LokiError> {
        let url = format!("{}{PUSH_PATH}", self.base);
        let response =
            match self.http.post(&url).header(CONTENT_TYPE, PUSH_CONTENT_TYPE).body(body).send().await {
                Ok(response) => response,
                Err(e) => {
                    return Ok(PushOutcome::Retry {
                        status: None,
                        retry_after: None,
                        reason: format!("could not reach Loki at {url}: {}", error_chain(&e)),
                    })
                }
            };
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = read_message(response, PUSH_RESPONSE_LIMIT).await;
        Ok(classify_push_response(status, retry_after.as_deref(), &body)?)
    }

    /// Runs one `query_range` call, asking for categorised labels.
    pub async fn query_range(&self, query: &QueryRange) -> Result<QueryResponse, LokiError> {
        Ok(parse_query_response(&self.query_body(query).await?)?)
    }

    /// Runs one `query_range` call for its lines and times only ([`parse_query_page`]). Labels
    /// are asked categorised, so that structured metadata, which is skipped, does not split
    /// the answer into a stream per entry.
    pub async fn query_page(&self, query: &QueryRange) -> Result<Page, LokiError> {
        Ok(parse_query_page(&self.query_body(query).await?)?)
    }

    async fn query_body(&self, query: &QueryRange) -> Result<Vec<u8>, LokiError> {
        self.get(&query.path_and_query(), &[(ENCODING_FLAGS_HEADER, CATEGORIZE_LABELS)]).await
    }

    /// The values of label `name` in the streams `selector` matches within `[start, end)`.
    pub async fn label_values(
        &self,
        name: &str,
        selector: &str,
        start: UnixNanos,
        end: UnixNanos,
    ) -> Result<Vec<String>, LokiError> {
        Ok(parse_label_values(&self.get(&label_values_path(name, selector, start, end), &[]).await?)?)
    }

    /// A GET of `path_and_query` whose answer must be 200; returns the body.
    async fn get(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Result<Vec<u8>, LokiError> {
        let url = format!("{}{path_and_query}", self.base);
        let transport = |e: reqwest::Error| LokiError::Transport { url: url.clone(), why: error_chain(&e) };
        let mut request = self.http.get(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(RetryAfter::parse);
        let body = read_capped(response, self.max_response_bytes).await.map_err(|e| match e {
            ReadError::TooLarge => LokiError::TooLarge { limit: self.max_response_bytes },
            ReadError::Http(e) => transport(e),
        })?;
        if status != 200 {
            return Err(LokiError::QueryStatus { url, status, retry_after, message: body_text(&body) });
        }
        Ok(body)
    }
}

/// The body of an answer whose status has already decided the outcome: at most `limit` bytes,
/// or a note saying why it could not be read (that only makes the report poorer).
pub async fn read_message(response: reqwest::Response, limit: usize) -> Vec<u8> {
    match read_capped(response, limit).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => b"(a message too long to read)".to_vec(),
        Err(ReadError::Http(e)) => {
            format!("(the message could not be read: {})", error_chain(&e)).into_bytes()
        }
    }
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    // Room for the length the server announces, within the cap and a bound on what a false
    // announcement can make us reserve: a page is read without growing the buffer step by step.
    const MAX_RESERVED: u64 = 16 << 20;
    let announced = response.content_length().unwrap_or(0).min(MAX_RESERVED);
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
