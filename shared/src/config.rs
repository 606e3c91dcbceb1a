//! Typed, layered configuration: defaults, then an optional TOML file, then environment
//! variables. Secrets are held in [`SecretString`] so `Debug` never prints them, and a bad
//! value names the key it came from.

use std::{net::IpAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Environment variables read without the `NONGSAN_` prefix, as the wider ecosystem names them.
const UNPREFIXED: &[&str] = &["DATABASE_URL", "REDIS_URL", "MEILI_URL", "MEILI_KEY"];

/// Every setting of a nongsan process. The README lists each one with its variable.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Folder for the embedded PostgreSQL cluster, the embedded search index and generated secrets.
    pub data_dir: PathBuf,
    /// Address the HTTP server binds.
    pub host: IpAddr,
    /// Port the HTTP server binds; 0 picks a free one.
    pub port: u16,
    /// PostgreSQL connection URL; without it `nongsan up` starts a private cluster.
    #[serde(serialize_with = "ser_secret_opt")]
    pub database_url: Option<SecretString>,
    /// Folder of the PostgreSQL server binaries (initdb, pg_ctl, postgres) for the private
    /// cluster; searched for in PATH, `pg_config --bindir` and /usr/lib/postgresql when unset.
    pub postgres_bin: Option<PathBuf>,
    /// Largest number of connections each service's pool opens.
    pub database_max_connections: u32,
    /// Redis URL for cache, rate limits and event streams; without it these run in-process.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and stream nongsan uses, so environments can share a server.
    pub redis_prefix: String,
    /// Meilisearch URL; without it search runs on the embedded engine.
    pub meili_url: Option<String>,
    /// Meilisearch API key.
    #[serde(serialize_with = "ser_secret_opt")]
    pub meili_key: Option<SecretString>,
    /// HMAC key that signs access tokens, shared by all services. Generated into the data
    /// folder by `nongsan up` when absent.
    #[serde(serialize_with = "ser_secret_opt")]
    pub auth_secret: Option<SecretString>,
    /// Lifetime of an access token, in seconds.
    pub access_token_ttl_secs: u64,
    /// Base URL of the listing service (split shape); `nongsan up` uses its own address.
    pub listing_url: Option<String>,
    /// Base URL of the order service (split shape).
    pub order_url: Option<String>,
    /// Base URL of the payment service (split shape).
    pub payment_url: Option<String>,
    /// Log format: `text` for people, `json` for machines.
    pub log_format: LogFormat,
    /// Delivery fee each seller's order adds to a checkout, in đồng.
    pub delivery_fee_vnd: i64,
    /// How long an online payment may take before the checkout expires, in seconds.
    pub checkout_ttl_secs: u64,
    /// How long a cash-on-delivery order waits for its seller to confirm, in seconds.
    pub cod_confirm_ttl_secs: u64,
    /// VNPay terminal code (vnp_TmnCode); VNPay is offered when it and the hash secret are set.
    pub vnpay_tmn_code: Option<String>,
    /// VNPay hash secret (HMAC-SHA512 key).
    #[serde(serialize_with = "ser_secret_opt")]
    pub vnpay_hash_secret: Option<SecretString>,
    /// VNPay payment page.
    pub vnpay_pay_url: String,
    /// Where VNPay sends the buyer back after paying (display only; the IPN decides).
    pub vnpay_return_url: String,
    /// Memory the embedded search index's writer may use before it writes a segment, MiB
    /// (at least 15).
    pub search_writer_mb: u32,
    /// Memory the listing service keeps listing pages in, MiB (0: none kept; every read goes
    /// to PostgreSQL).
    pub listing_cache_mb: u32,
    /// Longest a kept listing page is served, seconds. A change forgets it at once; this
    /// bounds what a change the service was not told of could leave.
    pub listing_cache_secs: u64,
    /// VNPay's merchant API (refunds, `querydr`).
    pub vnpay_api_url: String,
    /// Stripe secret key (`sk_...`, secret); Stripe is offered when it and the webhook
    /// secret are set.
    #[serde(serialize_with = "ser_secret_opt")]
    pub stripe_secret_key: Option<SecretString>,
    /// Stripe webhook endpoint secret (`whsec_...`, secret) for `/v1/payments/stripe/webhook`.
    #[serde(serialize_with = "ser_secret_opt")]
    pub stripe_webhook_secret: Option<SecretString>,
    /// Stripe's API base (ending in `/`); Stripe's own when unset (a local fake in tests).
    pub stripe_api_url: Option<String>,
    /// MoMo partner code; MoMo is offered when it, the access key and the secret key are set.
    pub momo_partner_code: Option<String>,
    /// MoMo access key.
    pub momo_access_key: Option<String>,
    /// MoMo secret key (HMAC-SHA256 key, secret).
    #[serde(serialize_with = "ser_secret_opt")]
    pub momo_secret_key: Option<SecretString>,
    /// MoMo's API (its test environment by default).
    pub momo_endpoint: String,
    /// Where MoMo sends the buyer back after paying (display only; the IPN decides).
    pub momo_redirect_url: String,
    /// Where MoMo posts its IPN: this deployment's public `/v1/payments/momo/ipn`.
    pub momo_ipn_url: String,
    /// A payment still pending this long after it was opened is asked of its provider (a
    /// callback can be lost), seconds.
    pub payment_reconcile_after_secs: u64,
    /// How often the reconciler and the refund worker look for work, milliseconds.
    pub payment_sweep_ms: u64,
    /// Where lots' QR codes point: the scheme and host of the traceability resolver (the
    /// listing service serves `/01/...` and `/t/...` there).
    pub trace_base_url: String,
    /// How often the listing service looks for certifications that expired (their search
    /// facet is dropped), seconds.
    pub certification_sweep_secs: u64,
    /// Commission on a sold line when neither its category nor its seller has a rate of its
    /// own, in basis points (500 = 5%).
    pub commission_default_bps: u32,
    /// How long a delivered order's money is held before the seller can be paid it
    /// (returns and disputes), seconds.
    pub payout_hold_secs: u64,
    /// How old a reservation may be before the listing service asks the order service
    /// whether its checkout was stored, and gives it back when none was, seconds.
    pub reservation_orphan_secs: u64,
    /// Attempts a consumer makes at one event before it goes to the dead-letter list.
    pub events_max_attempts: u32,
    /// First retry delay of a failing event, in milliseconds; it doubles on each attempt.
    pub events_retry_base_ms: u64,
    /// How often the outbox relay and inbox workers look for work when not woken, in milliseconds.
    pub events_poll_ms: u64,
    /// The least time between two passes of the outbox relay while events keep coming, in
    /// milliseconds: each pass then carries what many commits wrote (a pass costs a
    /// transaction and a marking whatever it carries). An event after a quiet spell still
    /// goes at once. 0: a pass per wake-up.
    pub events_pace_ms: u64,
    /// How long published outbox rows, handled inbox rows (a day longer) and acknowledged
    /// stream entries are kept, in hours; 0 keeps them for ever.
    pub events_keep_hours: u64,
    /// Behind a reverse proxy: the header in which the proxy appends the client's address
    /// (e.g. `X-Forwarded-For`); the last address in it is the client's. Unset: the peer's
    /// address is the client's.
    pub client_ip_header: Option<String>,
    /// Most of a listing's stock (percent of on-hand) one buyer may hold in cash-on-delivery
    /// orders its sellers have not confirmed yet.
    pub max_hold_share_percent: u32,
    /// Most cash-on-delivery checkouts one buyer may have waiting for their sellers at once.
    pub max_open_cod_checkouts: u32,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn ser_secret_opt<S: serde::Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    match v {
        Some(v) => s.serialize_some(v.expose_secret()),
        None => s.serialize_none(),
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".nongsan"),
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            database_url: None,
            postgres_bin: None,
            database_max_connections: 10,
            redis_url: None,
            redis_prefix: "nongsan".to_owned(),
            meili_url: None,
            meili_key: None,
            auth_secret: None,
            access_token_ttl_secs: 900,
            listing_url: None,
            order_url: None,
            payment_url: None,
            log_format: LogFormat::Text,
            delivery_fee_vnd: 30_000,
            checkout_ttl_secs: 900,
            cod_confirm_ttl_secs: 48 * 3600,
            vnpay_tmn_code: None,
            vnpay_hash_secret: None,
            vnpay_pay_url: "https://sandbox.vnpayment.vn/paymentv2/vpcpay.html".to_owned(),
            vnpay_return_url: "http://localhost:8080/v1/payments/vnpay/return".to_owned(),
            vnpay_api_url: "https://sandbox.vnpayment.vn/merchant_webapi/api/transaction"
                .to_owned(),
            search_writer_mb: 64,
            listing_cache_mb: 256,
            listing_cache_secs: 300,
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            stripe_api_url: None,
            momo_partner_code: None,
            momo_access_key: None,
            momo_secret_key: None,
            momo_endpoint: "https://test-payment.momo.vn".to_owned(),
            momo_redirect_url: "http://localhost:8080/v1/payments/momo/return".to_owned(),
            momo_ipn_url: "http://localhost:8080/v1/payments/momo/ipn".to_owned(),
            payment_reconcile_after_secs: 600,
            payment_sweep_ms: 5_000,
            trace_base_url: "http://localhost:8080".to_owned(),
            certification_sweep_secs: 3600,
            commission_default_bps: 500,
            payout_hold_secs: 7 * 24 * 3600,
            reservation_orphan_secs: 60,
            events_max_attempts: 8,
            events_retry_base_ms: 500,
            events_poll_ms: 500,
            events_pace_ms: 100,
            events_keep_hours: 168,
            client_ip_header: None,
            max_hold_share_percent: 50,
            max_open_cod_checkouts: 5,
        }
    }
}

/// A configuration value that could not be read; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// The payment methods a buyer may choose here: cash on delivery always, each provider
    /// when its keys are set.
    pub fn payment_methods(&self) -> Vec<crate::contracts::payments::PaymentMethod> {
        use crate::contracts::payments::PaymentMethod;
        let mut methods = vec![PaymentMethod::Cod];
        if self.vnpay_tmn_code.is_some() && self.vnpay_hash_secret.is_some() {
            methods.push(PaymentMethod::Vnpay);
        }
        if self.stripe_secret_key.is_some() && self.stripe_webhook_secret.is_some() {
            methods.push(PaymentMethod::Stripe);
        }
        if self.momo_partner_code.is_some()
            && self.momo_access_key.is_some()
            && self.momo_secret_key.is_some()
        {
            methods.push(PaymentMethod::Momo);
        }
        methods
    }

    /// Loads defaults, then the TOML file named by `NONGSAN_CONFIG` (if any), then the
    /// environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os("NONGSAN_CONFIG").map(PathBuf::from);
        let prefixed =
            Env::prefixed("NONGSAN_").ignore(&["CONFIG", "FAILPOINTS", "OPERATOR_PASSWORD"]);
        let plain = Env::raw().filter(|k| {
            UNPREFIXED
                .iter()
                .any(|u| k.as_str().eq_ignore_ascii_case(u))
        });
        Self::base(file.as_deref())
            .merge(prefixed)
            .merge(plain)
            .extract::<Self>()
            .map_err(describe)?
            .checked()
    }

    /// Loads from the given file and environment pairs instead of the process environment;
    /// tests use it.
    pub fn load_from(
        file: Option<&std::path::Path>,
        env: &[(&str, &str)],
    ) -> Result<Self, ConfigError> {
        let mut fig = Self::base(file);
        for (k, v) in env {
            let key = k.strip_prefix("NONGSAN_").unwrap_or(k).to_ascii_lowercase();
            if key == "config" {
                continue;
            }
            fig = fig.merge((
                key,
                v.parse::<figment::value::Value>()
                    .unwrap_or_else(|_| (*v).into()),
            ));
        }
        fig.extract::<Self>().map_err(describe)?.checked()
    }

    /// Refuses values that parse but are unsafe: a signing secret shorter than
    /// [`MIN_SECRET_BYTES`](crate::auth::MIN_SECRET_BYTES), an access-token lifetime of 0 or
    /// above [`MAX_ACCESS_TOKEN_TTL_SECS`](crate::auth::MAX_ACCESS_TOKEN_TTL_SECS).
    fn checked(self) -> Result<Self, ConfigError> {
        use crate::auth::{MAX_ACCESS_TOKEN_TTL_SECS, MIN_SECRET_BYTES};
        use secrecy::ExposeSecret;
        if let Some(secret) = &self.auth_secret {
            let len = secret.expose_secret().len();
            if len < MIN_SECRET_BYTES {
                return Err(ConfigError(format!(
                    "`auth_secret` (NONGSAN_AUTH_SECRET): must be at least {MIN_SECRET_BYTES} bytes, it has {len}"
                )));
            }
        }
        if !(1..=MAX_ACCESS_TOKEN_TTL_SECS).contains(&self.access_token_ttl_secs) {
            return Err(ConfigError(format!(
                "`access_token_ttl_secs` (NONGSAN_ACCESS_TOKEN_TTL_SECS): must be 1 to {MAX_ACCESS_TOKEN_TTL_SECS} seconds, it is {}",
                self.access_token_ttl_secs
            )));
        }
        if self.commission_default_bps > 10_000 {
            return Err(ConfigError(format!(
                "`commission_default_bps` (NONGSAN_COMMISSION_DEFAULT_BPS): must be 0 to 10000 basis points (100%), it is {}",
                self.commission_default_bps
            )));
        }
        Ok(self)
    }

    fn base(file: Option<&std::path::Path>) -> Figment {
        let fig = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(file) => fig.merge(Toml::file_exact(file)),
            None => fig,
        }
    }

    /// The socket address to bind.
    pub fn bind_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.host, self.port)
    }
}

/// Turns a figment error into one line naming the key and, when it came from the
/// environment, the variable.
fn describe(err: figment::Error) -> ConfigError {
    let key = err.path.join(".");
    let var = if UNPREFIXED.iter().any(|u| u.eq_ignore_ascii_case(&key)) {
        key.to_ascii_uppercase()
    } else {
        format!("NONGSAN_{}", key.to_ascii_uppercase())
    };
    let what = match &err.kind {
        figment::error::Kind::UnknownField(f, _) => format!("unknown key `{f}`"),
        other => other.to_string(),
    };
    if key.is_empty() {
        ConfigError(what)
    } else {
        ConfigError(format!("`{key}` ({var}): {what}"))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn environment_overrides_file_and_defaults() {
        let dir = std::env::temp_dir().join(format!("nongsan-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("nongsan.toml");
        std::fs::write(&file, "port = 9000\nhost = \"0.0.0.0\"\n").unwrap();
        let s = Settings::load_from(Some(&file), &[("NONGSAN_PORT", "9100")]).unwrap();
        assert_eq!(s.port, 9100);
        assert_eq!(s.host.to_string(), "0.0.0.0");
        assert_eq!(s.events_max_attempts, 8);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = Settings::load_from(None, &[("NONGSAN_PORT", "eighty")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("NONGSAN_PORT"), "{text}");
        assert!(text.contains("`port`"), "{text}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Settings::load_from(
            None,
            &[
                ("DATABASE_URL", "postgres://u:hunter2@db/x"),
                ("NONGSAN_AUTH_SECRET", "s3cr3t-value-of-at-least-32-bytes"),
            ],
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert_eq!(
            s.database_url.unwrap().expose_secret(),
            "postgres://u:hunter2@db/x"
        );
    }

    #[test]
    fn a_short_secret_or_a_long_token_lifetime_is_refused() {
        let err = Settings::load_from(None, &[("NONGSAN_AUTH_SECRET", "short")]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("NONGSAN_AUTH_SECRET") && text.contains("32 bytes"),
            "{text}"
        );
        assert!(!text.contains("short,"), "{text}");
        let err =
            Settings::load_from(None, &[("NONGSAN_ACCESS_TOKEN_TTL_SECS", "3601")]).unwrap_err();
        assert!(
            err.to_string().contains("NONGSAN_ACCESS_TOKEN_TTL_SECS"),
            "{err}"
        );
        let s = Settings::load_from(None, &[("NONGSAN_ACCESS_TOKEN_TTL_SECS", "3600")]).unwrap();
        assert_eq!(s.access_token_ttl_secs, 3600);
    }
}
