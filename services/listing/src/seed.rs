//! Demo data: households in the real communes of the 50 demo products, one cooperative in
//! Lâm Đồng with its member households, and every product listed with a lot in stock.
//!
//! Demo accounts are recognisable: their phone numbers are 0900 000 100 and up (the
//! cooperative's manager 0900 001 099) and their names end in "(demo)". They get a password
//! only from [`seed_demo_with_password`], and only when it creates them, in the same
//! transaction: no account that existed before is ever given one.

use chrono::{Days, Utc};
use nongsan_shared::{
    AccountId, PhoneNumber, Quantity, Vnd,
    auth::{Actor, Role},
};
use sqlx::PgPool;

use crate::{
    access::Owner,
    catalog::{
        input::{Certification, CheckedListing, ListingInput},
        reference::{DEMO_PRODUCTS_CSV, reference},
        store::insert_listing,
    },
    identity::{passwords::hash_password, store::insert_account},
    sellers::{
        households::insert_household,
        profile::{AddressInput, HouseholdInput, Point},
    },
    stock::lots::{self, LotIntake},
};

/// The first demo phone number; the n-th household is this plus n.
const DEMO_PHONE_BASE: u64 = 900_000_100;

/// The number of the cooperative manager's phone, after the households'.
const DEMO_MANAGER: u64 = 999;

fn demo_phone(n: u64) -> PhoneNumber {
    PhoneNumber::parse(&format!("0{}", DEMO_PHONE_BASE + n))
        .expect("demo numbers are valid mobile numbers")
}

/// A demo household's name: its commune's, marked as demo.
fn demo_household_name(commune_full_name: &str) -> String {
    format!("Hộ sản xuất {commune_full_name} (demo)")
}

/// A demo account that sells, as [`seed_demo`] makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSeller {
    /// Its phone number, to sign in with.
    pub phone: PhoneNumber,
    /// Its name, as orders and search hits show it.
    pub name: String,
}

/// The demo households [`seed_demo`] makes, in order: one per commune of the demo products.
/// Computed from the embedded data, so it can be told without the database.
pub fn demo_households() -> anyhow::Result<Vec<DemoSeller>> {
    let mut reader = csv::Reader::from_reader(DEMO_PRODUCTS_CSV.as_bytes());
    let ward = reader
        .headers()?
        .iter()
        .position(|h| h == "ward_code")
        .ok_or_else(|| anyhow::anyhow!("demo CSV has no ward_code"))?;
    let mut wards: Vec<String> = Vec::new();
    let mut sellers = Vec::new();
    for rec in reader.records() {
        let rec = rec?;
        if wards.iter().any(|w| w == &rec[ward]) {
            continue;
        }
        let commune = reference()
            .commune(&rec[ward])
            .ok_or_else(|| anyhow::anyhow!("unknown commune {}", &rec[ward]))?;
        sellers.push(DemoSeller {
            phone: demo_phone(u64::try_from(wards.len()).unwrap_or(0)),
            name: demo_household_name(&commune.full_name),
        });
        wards.push(rec[ward].to_owned());
    }
    Ok(sellers)
}

/// The phone number of the demo cooperative's manager.
pub fn demo_manager_phone() -> PhoneNumber {
    demo_phone(DEMO_MANAGER)
}

/// A new random password for the demo accounts: `demo-` and 16 letters and digits.
pub fn new_demo_password() -> String {
    use rand::Rng;
    let tail: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(16)
        .map(char::from)
        .collect();
    format!("demo-{tail}")
}

/// Creates the demo data unless it is there already; returns how many listings it made.
/// Its accounts have no password (they wait for an activation nobody can give).
pub async fn seed_demo(pool: &PgPool) -> anyhow::Result<usize> {
    seed(pool, None).await
}

/// Like [`seed_demo`], and the demo households and the cooperative's manager it creates
/// sign in with `password`. When the demo data is there already, it changes nothing (and so
/// sets no password) and returns 0.
pub async fn seed_demo_with_password(pool: &PgPool, password: &str) -> anyhow::Result<usize> {
    let hash = hash_password(password.to_owned())
        .await
        .map_err(|e| anyhow::anyhow!("hashing the demo password: {e}"))?;
    seed(pool, Some(&hash)).await
}

/// Creates the demo data unless it is there already, its accounts with this password hash.
async fn seed(pool: &PgPool, password_hash: Option<&str>) -> anyhow::Result<usize> {
    let first = demo_phone(0);
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM accounts WHERE phone = $1) AS "exists!""#,
        first.as_str(),
    )
    .fetch_one(pool)
    .await?;
    if exists {
        return Ok(0);
    }
    let system = Actor {
        account_id: AccountId(uuid::Uuid::nil()),
        role: Role::Operator,
        on_behalf_of: None,
    };
    let mut reader = csv::Reader::from_reader(DEMO_PRODUCTS_CSV.as_bytes());
    let headers = reader.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| anyhow::anyhow!("demo CSV has no {name}"))
    };
    let (sku, name, category, unit, pmin, pmax, ward, lat, lon, cert, ocop) = (
        col("sku")?,
        col("name_vi")?,
        col("category")?,
        col("unit")?,
        col("price_min_vnd")?,
        col("price_max_vnd")?,
        col("ward_code")?,
        col("lat")?,
        col("lon")?,
        col("certification")?,
        col("ocop_star")?,
    );
    let mut tx = pool.begin().await?;
    let mut households: Vec<(String, AccountId)> = Vec::new();
    let mut made = 0;
    // The demo's certificates run from the start of this year (in Vietnam).
    let year = chrono::Datelike::year(&crate::catalog::store::today_in_vietnam());
    for rec in reader.records() {
        let rec = rec?;
        let commune = reference()
            .commune(&rec[ward])
            .ok_or_else(|| anyhow::anyhow!("unknown commune {}", &rec[ward]))?;
        let household = match households.iter().find(|(w, _)| w == &rec[ward]) {
            Some((_, id)) => *id,
            None => {
                let n = u64::try_from(households.len()).unwrap_or(0);
                let display = demo_household_name(&commune.full_name);
                let account = insert_account(
                    &mut tx,
                    &demo_phone(n),
                    password_hash,
                    Role::Household,
                    &display,
                    None,
                )
                .await
                .map_err(|e| anyhow::anyhow!("demo household: {e}"))?;
                let profile = HouseholdInput {
                    name: display,
                    address: AddressInput {
                        province_code: commune.province_code.clone(),
                        commune_code: commune.code.clone(),
                        street: String::new(),
                    },
                    farm_location: commune
                        .lat
                        .zip(commune.lon)
                        .map(|(lat, lon)| Point { lat, lon }),
                };
                insert_household(&mut tx, account.id, &profile)
                    .await
                    .map_err(|e| anyhow::anyhow!("demo household: {e}"))?;
                households.push((rec[ward].to_owned(), account.id));
                account.id
            }
        };
        let low: i64 = rec[pmin].parse()?;
        let high: i64 = rec[pmax].parse()?;
        let price = ((low + high) / 2 + 500) / 1000 * 1000;
        let certifications = match rec[cert].trim() {
            "" => Vec::new(),
            kind => vec![Certification {
                kind: kind.to_owned(),
                number: format!("{}-{}", kind.to_uppercase(), &rec[sku]),
                issuer: "Demo (fictional)".to_owned(),
                // From the start of the year the demo is seeded to the end of the year after
                // next: fixed dates would expire, and the demo's certified listings with them.
                valid_from: chrono::NaiveDate::from_ymd_opt(year, 1, 1).expect("a date"),
                valid_until: chrono::NaiveDate::from_ymd_opt(year + 2, 12, 31).expect("a date"),
            }],
        };
        let point = rec[lat]
            .parse()
            .ok()
            .zip(rec[lon].parse().ok())
            .map(|(lat, lon)| Point { lat, lon });
        let by_weight = rec[unit] == *"kg";
        let input = ListingInput {
            title: rec[name].to_owned(),
            description: format!("{} từ {}.", &rec[name], commune.full_name),
            category: rec[category].to_owned(),
            unit: rec[unit].to_owned(),
            price_vnd: Vnd(price),
            min_order: Some(if by_weight {
                "0.5".parse()?
            } else {
                "1".parse()?
            }),
            step: Some(if by_weight {
                "0.5".parse()?
            } else {
                "1".parse()?
            }),
            photos: Vec::new(),
            origin_commune: commune.code.clone(),
            origin_point: point,
            certifications,
            ocop_stars: rec[ocop].trim().parse().ok(),
            low_stock_threshold: Some("5".parse()?),
            status: Some("active".to_owned()),
            cooperative_id: None,
            gtin: None,
        };
        let input = CheckedListing::try_from(input)
            .map_err(|e| anyhow::anyhow!("demo listing {}: {e:?}", &rec[sku]))?;
        let view = insert_listing(&mut tx, &system, Owner::Household(household), &input)
            .await
            .map_err(|e| anyhow::anyhow!("demo listing {}: {e:?}", &rec[sku]))?;
        let lot = LotIntake {
            lot_code: format!("{}-L1", &rec[sku]),
            harvest_date: Utc::now().date_naive() - Days::new(2),
            quantity: if by_weight {
                "200".parse::<Quantity>()?
            } else {
                "100".parse()?
            },
            household_id: None,
        };
        lots::intake(
            &mut tx,
            &system,
            view.id,
            Owner::Household(household),
            &lot,
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("demo stock {}: {e:?}", &rec[sku]))?;
        made += 1;
    }
    // A cooperative in Lâm Đồng with the demo households there as members.
    let lam_dong: Vec<(String, AccountId)> = households
        .iter()
        .filter(|(w, _)| {
            reference()
                .commune(w)
                .is_some_and(|c| c.province_code == "68")
        })
        .cloned()
        .collect();
    if let Some((commune, _)) = lam_dong.first() {
        let manager = insert_account(
            &mut tx,
            &demo_manager_phone(),
            password_hash,
            Role::CooperativeManager,
            "Quản lý HTX (demo)",
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("demo manager: {e}"))?;
        let coop = nongsan_shared::CooperativeId::new();
        sqlx::query!(
            "INSERT INTO cooperatives (id, name, province_code, commune_code, manager_id) VALUES ($1, $2, '68', $3, $4)",
            coop as _,
            "HTX Nông sản Lâm Đồng (demo)",
            commune,
            manager.id as _,
        )
        .execute(&mut *tx)
        .await?;
        for (_, member) in &lam_dong {
            sqlx::query!(
                "INSERT INTO cooperative_members (cooperative_id, household_id, status) VALUES ($1, $2, 'active')",
                coop as _,
                member as _,
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_households_are_told_by_distinct_phones_and_names_marked_demo() {
        let sellers = demo_households().unwrap();
        assert_eq!(sellers.len(), 27);
        for (i, s) in sellers.iter().enumerate() {
            assert!(s.name.ends_with(" (demo)"), "{}", s.name);
            assert!(
                !sellers[..i]
                    .iter()
                    .any(|o| o.phone == s.phone || o.name == s.name)
            );
        }
        assert!(!sellers.iter().any(|s| s.phone == demo_manager_phone()));
    }

    #[test]
    fn a_new_demo_password_is_random_and_long_enough() {
        let (a, b) = (new_demo_password(), new_demo_password());
        assert_ne!(a, b);
        assert!(a.starts_with("demo-") && a.len() == 21, "{a}");
    }
}
