//! Answering the person who clicked, through the interaction's `response_url`: Slack's own
//! channel for a reply to a click (five uses within thirty minutes), outside the Web API's
//! per-method limits. A `chat.postEphemeral` per click would spend a Tier 4 budget that the
//! rest of the workspace's work shares.
//!
//! The URL arrives in a payload whose signature was checked, so it is Slack's; it is still only
//! followed over https, or over http to the origin of the configured API (the sandbox).

use std::time::Duration;

use serde_json::json;
use url::Url;

use super::SlackError;

/// The longest a reply may take; the click is already acknowledged.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Responder {
    http: reqwest::Client,
    /// The origin plain http is allowed to (the sandbox's), if the API is plain http.
    http_origin: Option<url::Origin>,
}

impl Responder {
    /// Replies for a workspace whose Web API is at `api_url`.
    pub fn new(api_url: &Url) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REPLY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client without custom TLS settings builds");
        Self {
            http,
            http_origin: (api_url.scheme() == "http").then(|| api_url.origin()),
        }
    }

    /// A message only the clicker sees, leaving the card as it is.
    pub async fn ephemeral(&self, response_url: &str, text: &str) -> Result<(), SlackError> {
        let url = self.allowed(response_url)?;
        let body = json!({"response_type": "ephemeral", "replace_original": false, "text": text});
        let answer = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| SlackError::Transport(e.without_url().to_string()))?;
        let status = answer.status();
        if status.as_u16() == 429 {
            let after = answer
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            return Err(SlackError::RateLimited(Duration::from_secs(after)));
        }
        if !status.is_success() {
            let reason = answer.text().await.unwrap_or_default();
            return Err(SlackError::Api(format!(
                "response_url answered {status}: {}",
                reason.chars().take(100).collect::<String>()
            )));
        }
        Ok(())
    }

    fn allowed(&self, response_url: &str) -> Result<Url, SlackError> {
        let refused = || SlackError::Api("response_url is not Slack's".into());
        let url = Url::parse(response_url).map_err(|_| refused())?;
        match url.scheme() {
            "https" => Ok(url),
            "http" if self.http_origin.as_ref() == Some(&url.origin()) => Ok(url),
            _ => Err(refused()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_to_the_sandbox() {
        let slack = Responder::new(&Url::parse("https://slack.com/api").unwrap());
        assert!(
            slack
                .allowed("https://hooks.slack.com/actions/T1/2/x")
                .is_ok()
        );
        assert!(
            slack
                .allowed("http://hooks.slack.com/actions/T1/2/x")
                .is_err()
        );
        assert!(slack.allowed("file:///etc/passwd").is_err());

        let sandbox = Responder::new(&Url::parse("http://127.0.0.1:8080/sandbox/api").unwrap());
        assert!(
            sandbox
                .allowed("http://127.0.0.1:8080/sandbox/response/abc")
                .is_ok()
        );
        assert!(
            sandbox
                .allowed("http://127.0.0.1:9999/sandbox/response/abc")
                .is_err()
        );
    }
}
