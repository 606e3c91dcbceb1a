//! Demo data: households in the real communes of the 50 demo products, one cooperative in
//! Lâm Đồng with its member households, and every product listed with a lot in stock.

use chrono::{Days, Utc};
use nongsan_shared::{
    AccountId, PhoneNumber, Quantity, Vnd,
    auth::{Actor, Role},
};
use sqlx::PgPool;

use crate::{
    access::Owner,
    catalog::{
        input::{Certification, ListingInput},
        reference::{DEMO_PRODUCTS_CSV, reference},
        store::insert_listing,
    },
    identity::store::insert_account,
    sellers::{
        households::insert_household,
        profile::{AddressInput, HouseholdInput, Point},
    },
    stock::lots::{self, LotIntake},
};

/// The first demo phone number; the n-th household is this plus n.
const DEMO_PHONE_BASE: u64 = 900_000_100;

fn demo_phone(n: u64) -> PhoneNumber {
    PhoneNumber::parse(&format!("0{}", DEMO_PHONE_BASE + n))
        .expect("demo numbers are valid mobile numbers")
}

/// Creates the demo data unless it is there already; returns how many listings it made.
pub async fn seed_demo(pool: &PgPool) -> anyhow::Result<usize> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE phone = $1)")
            .bind(demo_phone(0).as_str())
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
    for rec in reader.records() {
        let rec = rec?;
        let commune = reference()
            .commune(&rec[ward])
            .ok_or_else(|| anyhow::anyhow!("unknown commune {}", &rec[ward]))?;
        let household = match households.iter().find(|(w, _)| w == &rec[ward]) {
            Some((_, id)) => *id,
            None => {
                let n = u64::try_from(households.len()).unwrap_or(0);
                let display = format!("Hộ sản xuất {}", commune.full_name);
                let account = insert_account(
                    &mut tx,
                    &demo_phone(n),
                    None,
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
                valid_from: chrono::NaiveDate::from_ymd_opt(2025, 1, 1).expect("a date"),
                valid_until: chrono::NaiveDate::from_ymd_opt(2027, 12, 31).expect("a date"),
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
        };
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
            &demo_phone(999),
            None,
            Role::CooperativeManager,
            "Quản lý HTX (demo)",
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("demo manager: {e}"))?;
        let coop = nongsan_shared::CooperativeId::new();
        sqlx::query("INSERT INTO cooperatives (id, name, province_code, commune_code, manager_id) VALUES ($1, $2, '68', $3, $4)")
            .bind(coop)
            .bind("HTX Nông sản Lâm Đồng (demo)")
            .bind(commune)
            .bind(manager.id)
            .execute(&mut *tx)
            .await?;
        for (_, member) in &lam_dong {
            sqlx::query(
                "INSERT INTO cooperative_members (cooperative_id, household_id) VALUES ($1, $2)",
            )
            .bind(coop)
            .bind(member)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(made)
}
