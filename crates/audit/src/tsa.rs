//! Trusted time for evidence bundles and gateway checkpoints: each batch header of a bundle, or
//! each checkpoint, stamped by an RFC 3161 TSA over HTTP, and tokens checked against the TSA roots
//! the auditor gives (`teelog-tsa`).

use teelog_core::evidence::Bundle;

/// Most bytes read from a TSA's answer.
const MAX_TSA_RESPONSE: usize = 1 << 20;

/// Why a bundle could not be stamped; names the batch and the TSA.
#[derive(Debug, thiserror::Error)]
pub enum StampError {
    /// The URL is not one teelog can post to.
    #[error("--tsa {url}: {why}")]
    Url {
        /// The TSA's URL.
        url: String,
        /// Why not.
        why: String,
    },
    /// The TSA could not be asked, or its answer is no timestamp of the batch.
    #[error("--tsa {url}: batches[{batch}]: {why}")]
    Answer {
        /// The TSA's URL.
        url: String,
        /// The batch of the bundle.
        batch: usize,
        /// What went wrong.
        why: String,
    },
}

/// Stamps each batch header of `bundle` at the TSA at `url`, putting the tokens in the bundle.
pub fn stamp(bundle: &mut Bundle, url: &str) -> Result<(), StampError> {
    let client = TsaClient::new(url, std::time::Duration::from_secs(30))?;
    for (i, batch) in bundle.batches.iter_mut().enumerate() {
        let digest = teelog_core::merkle::sha256(batch.header.as_bytes());
        let token = client.stamp(&digest).map_err(|why| StampError::Answer {
            url: url.to_string(),
            batch: i,
            why,
        })?;
        batch.set_timestamp(&token);
    }
    Ok(())
}

/// An RFC 3161 TSA reached over HTTP (POST of a `TimeStampReq`, `application/timestamp-query`),
/// for callers outside an async runtime: evidence export, and the gateway's writer thread.
pub struct TsaClient {
    url: String,
    parsed: reqwest::Url,
    client: reqwest::Client,
    /// Always Some until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for TsaClient {
    /// Without blocking: the client may be dropped inside an async context (a gateway that fails
    /// to start after making it), where dropping a runtime the plain way panics.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl TsaClient {
    /// A client of the TSA at `url`; each request may take `timeout`.
    pub fn new(url: &str, timeout: std::time::Duration) -> Result<Self, StampError> {
        let bad_url = |why: String| StampError::Url { url: url.to_string(), why };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad_url(e.to_string()))?;
        let options = teelog_loki::ClientOptions { timeout, ..Default::default() };
        let client = teelog_loki::http_client(&parsed, &options).map_err(|e| bad_url(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| bad_url(e.to_string()))?;
        Ok(Self { url: url.to_string(), parsed, client, runtime: Some(runtime) })
    }

    /// The TSA's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A token over `digest` (SHA-256), or why there is none. Blocks; not for async code.
    pub fn stamp(&self, digest: &[u8; 32]) -> Result<Vec<u8>, String> {
        // The nonce only pairs answer and request.
        let nonce = u64::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
        ]);
        let request = teelog_tsa::request(digest, nonce).map_err(|e| e.to_string())?;
        let runtime = self.runtime.as_ref().ok_or("the TSA client is shut down")?;
        let answer = runtime.block_on(async {
            let mut response = self
                .client
                .post(self.parsed.clone())
                .header("Content-Type", "application/timestamp-query")
                .body(request)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| teelog_loki::error_chain(&e))?;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| teelog_loki::error_chain(&e))? {
                if body.len() + chunk.len() > MAX_TSA_RESPONSE {
                    return Err(format!("the answer is larger than {MAX_TSA_RESPONSE} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        })?;
        teelog_tsa::token_of_response(&answer).map_err(|e| e.to_string())
    }
}

pub use teelog_tsa::TsaRoots;
