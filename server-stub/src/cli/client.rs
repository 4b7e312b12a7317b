//! A small client for the admin API: bearer token, JSON in and out, error bodies turned into
//! messages that say what to fix, and both pagination styles followed to the end. Request
//! bodies are the API's own types; answers come back as the server's JSON, which the commands
//! print under `--json` or decode with [`super::decode`].

use anyhow::{anyhow, bail, Context, Result};
use licd_stub::admin::error::ErrorBody;
use licd_stub::admin::query::Pagination;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

/// Client of one admin API.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8180`).
    pub fn new(base: &str, token: String) -> Result<Self> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--admin-url {base:?}: expected http://host:port");
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(Value, Option<String>)> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the admin API at {}: {e} (is `licd-stub serve` running? \
                 --admin-url or LICD_STUB_ADMIN_URL say where it listens)",
                self.base
            )
        })?;
        let status = resp.status();
        let link = resp
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp
            .text()
            .await
            .context("reading the admin API's answer")?;
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok((v, link));
        }
        let msg = match serde_json::from_value::<ErrorBody>(v.clone()) {
            Ok(b) => b.error.message,
            Err(_) => v.to_string(),
        };
        let hint = match status {
            StatusCode::UNAUTHORIZED => {
                " (the token was refused: check --token-file, or make one with `licd-stub token create`)"
            }
            StatusCode::FORBIDDEN => " (use an admin token: `licd-stub token create --kind admin`)",
            StatusCode::TOO_MANY_REQUESTS => " (slow down and retry)",
            _ => "",
        };
        bail!("{method} {path}: {} {msg}{hint}", status.as_u16())
    }

    /// POST a file's bytes (`application/octet-stream`); returns the answer's bytes, or the
    /// error body's message.
    pub async fn post_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the admin API at {}: {e}", self.base))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .context("reading the admin API's answer")?
            .to_vec();
        if status.is_success() {
            return Ok(body);
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let msg = v["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("POST {path}: {} {msg}", status.as_u16())
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<Value> {
        Ok(self.send(Method::GET, path, None).await?.0)
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: &impl Serialize) -> Result<Value> {
        let body = serde_json::to_value(body).context("encoding the request")?;
        Ok(self.send(Method::POST, path, Some(body)).await?.0)
    }

    /// PATCH a JSON body.
    pub async fn patch(&self, path: &str, body: &impl Serialize) -> Result<Value> {
        let body = serde_json::to_value(body).context("encoding the request")?;
        Ok(self.send(Method::PATCH, path, Some(body)).await?.0)
    }

    /// PUT a JSON body.
    pub async fn put(&self, path: &str, body: &impl Serialize) -> Result<Value> {
        let body = serde_json::to_value(body).context("encoding the request")?;
        Ok(self.send(Method::PUT, path, Some(body)).await?.0)
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<Value> {
        Ok(self.send(Method::DELETE, path, None).await?.0)
    }

    /// GET a Meraki-style list, following the `Link` header's `next` to the end.
    pub async fn get_all_pages(&self, path: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(p) = next.take() {
            let (v, link) = self.send(Method::GET, &p, None).await?;
            out.extend(v.as_array().cloned().unwrap_or_default());
            next = link.as_deref().and_then(next_link);
        }
        Ok(out)
    }

    /// GET a Snow-style list (`items`, `pagination`), every page; the items as the server
    /// sent them.
    pub async fn get_all_numbered(&self, path: &str) -> Result<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        let mut page = 1u32;
        loop {
            let v = self
                .get(&format!("{path}{sep}page_number={page}&page_size=1000"))
                .await?;
            let page_of: NumberedPage = super::decode(v)?;
            out.extend(page_of.items);
            if page >= page_of.pagination.total_pages {
                return Ok(out);
            }
            page += 1;
        }
    }
}

/// One page of a Snow-style list: the items stay JSON (each command decodes its own type, and
/// `--json` prints them as sent); the pagination is the API's.
#[derive(serde::Deserialize)]
struct NumberedPage {
    items: Vec<Value>,
    pagination: Pagination,
}

/// The target of `rel=next` in a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        params.contains("rel=next").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn the_next_link_is_found_among_others() {
        let h = "</a?perPage=3>; rel=first, </a?perPage=3&startingAfter=S3>; rel=next";
        assert_eq!(
            next_link(h).as_deref(),
            Some("/a?perPage=3&startingAfter=S3")
        );
        assert_eq!(next_link("</a>; rel=first"), None);
    }
}
