//! What a seller is made of: names, addresses and farm points with their checks, a household's
//! profile as given, and how a seller is shown on a listing.

use nongsan_shared::reference::reference;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::Problems;

/// A household's profile.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HouseholdInput {
    /// The household's name, e.g. "Hộ ông Nguyễn Văn A".
    pub name: String,
    /// Where it is.
    pub address: AddressInput,
    /// Where the farm is, if known.
    pub farm_location: Option<Point>,
}

/// A point on the map (WGS 84).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Latitude, −90 to 90.
    pub lat: f64,
    /// Longitude, −180 to 180.
    pub lon: f64,
}

/// An address in the 2025 administrative units.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressInput {
    /// Two-digit province code (2025).
    pub province_code: String,
    /// Five-digit commune code (2025), in that province.
    pub commune_code: String,
    /// Street, hamlet (thôn, ấp), house number.
    #[serde(default)]
    pub street: String,
}

/// Checks a display or household name.
pub fn check_name(p: &mut Problems, field: &str, name: &str) {
    let n = name.trim().chars().count();
    p.check(
        n == 0,
        field,
        "required",
        "must not be empty",
        "không được để trống",
    );
    p.check(
        n > 200,
        field,
        "too_long",
        "must be at most 200 characters",
        "tối đa 200 ký tự",
    );
    // Printed on lot labels and pages, and copied into orders.
    p.check_one_line(field, name);
}

/// Checks an address against the 2025 units.
pub fn check_address(p: &mut Problems, field: &str, a: &AddressInput) {
    for (part, reason) in reference().check_address(&a.province_code, &a.commune_code) {
        p.push(format!("{field}.{part}"), reason);
    }
    p.check(
        a.street.chars().count() > 300,
        &format!("{field}.street"),
        "too_long",
        "must be at most 300 characters",
        "tối đa 300 ký tự",
    );
    p.check_one_line(&format!("{field}.street"), &a.street);
}

/// Checks a point.
pub fn check_point(p: &mut Problems, field: &str, pt: Option<Point>) {
    if let Some(pt) = pt {
        let bad = !(-90.0..=90.0).contains(&pt.lat) || !(-180.0..=180.0).contains(&pt.lon);
        p.check(
            bad,
            field,
            "out_of_range",
            "must have lat in −90..90 and lon in −180..180",
            "vĩ độ phải trong −90..90 và kinh độ trong −180..180",
        );
    }
}

/// Checks a household profile.
pub fn check_household(p: &mut Problems, field: &str, h: &HouseholdInput) {
    check_name(p, &format!("{field}.name"), &h.name);
    check_address(p, &format!("{field}.address"), &h.address);
    check_point(p, &format!("{field}.farm_location"), h.farm_location);
}
