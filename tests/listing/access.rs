//! Who may change what: each refusal is a 403.

use nongsan_shared::auth::Role;
use serde_json::json;

use crate::support::{
    TestApp,
    actors::{household_profile, listing_body, phone},
    token,
};

#[tokio::test]
async fn a_household_cannot_change_another_households_listing() {
    let app = TestApp::spawn().await;
    let owner = app.register("household").await;
    let other = app.register("household").await;
    let listing = app.listing_with_stock(&owner, "10").await;
    let (status, body) = app
        .patch(
            &format!("/v1/listings/{listing}"),
            &other.token,
            &[],
            &json!({ "price_vnd": 1000 }),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = app
        .post(
            &format!("/v1/listings/{listing}/lots"),
            Some(&other.token),
            &json!({ "lot_code": "X1", "harvest_date": "2026-11-20", "quantity": "5" }),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .post(
            &format!("/v1/listings/{listing}/status"),
            Some(&other.token),
            &json!({ "status": "paused" }),
        )
        .await;
    assert_eq!(status, 403);
    // The owner can.
    let (status, body) = app
        .patch(
            &format!("/v1/listings/{listing}"),
            &owner.token,
            &[],
            &json!({ "price_vnd": 70000 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["price_vnd"], 70000);
    app.stop().await;
}

#[tokio::test]
async fn a_buyer_cannot_create_a_listing() {
    let app = TestApp::spawn().await;
    let buyer = app.register("buyer").await;
    let (status, body) = app
        .post("/v1/listings", Some(&buyer.token), &listing_body())
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
    let (status, _) = app.post("/v1/listings", None, &listing_body()).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn a_manager_changes_only_the_cooperatives_and_its_members_listings() {
    let app = TestApp::spawn().await;
    let manager = app.staff("cooperative_manager").await;
    let other_manager = app.staff("cooperative_manager").await;
    let member = app.register("household").await;
    let outsider = app.register("household").await;
    let coop_body = json!({ "name": "HTX Rau sạch Đơn Dương", "tax_code": "5801234567", "address": { "province_code": "68", "commune_code": "24931" } });
    let (status, coop) = app
        .post("/v1/cooperatives", Some(&manager.token), &coop_body)
        .await;
    assert_eq!(status, 201, "{coop}");
    let coop_id = coop["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .post(
            &format!("/v1/cooperatives/{coop_id}/members"),
            Some(&manager.token),
            &json!({ "household_id": member.id }),
        )
        .await;
    assert_eq!(status, 200);

    let member_listing = app.listing_with_stock(&member, "10").await;
    let outsider_listing = app.listing_with_stock(&outsider, "10").await;
    let mut pooled = listing_body();
    pooled["cooperative_id"] = json!(coop_id);
    let (status, pooled) = app
        .post("/v1/listings", Some(&manager.token), &pooled)
        .await;
    assert_eq!(status, 201, "{pooled}");
    let pooled = pooled["id"].as_str().unwrap();

    let price = json!({ "price_vnd": 60000 });
    assert_eq!(
        app.patch(
            &format!("/v1/listings/{member_listing}"),
            &manager.token,
            &[],
            &price
        )
        .await
        .0,
        200
    );
    assert_eq!(
        app.patch(
            &format!("/v1/listings/{pooled}"),
            &manager.token,
            &[],
            &price
        )
        .await
        .0,
        200
    );
    assert_eq!(
        app.patch(
            &format!("/v1/listings/{outsider_listing}"),
            &manager.token,
            &[],
            &price
        )
        .await
        .0,
        403
    );
    assert_eq!(
        app.patch(
            &format!("/v1/listings/{pooled}"),
            &other_manager.token,
            &[],
            &price
        )
        .await
        .0,
        403
    );
    assert_eq!(
        app.patch(
            &format!("/v1/listings/{member_listing}"),
            &other_manager.token,
            &[],
            &price
        )
        .await
        .0,
        403
    );
    // Another manager cannot add members to this cooperative.
    let (status, _) = app
        .post(
            &format!("/v1/cooperatives/{coop_id}/members"),
            Some(&other_manager.token),
            &json!({ "household_id": outsider.id }),
        )
        .await;
    assert_eq!(status, 403);
    // A member that left is no longer the manager's to change.
    let res = app
        .http
        .delete(app.at(&format!("/v1/cooperatives/{coop_id}/members/{}", member.id)))
        .bearer_auth(&manager.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        app.patch(
            &format!("/v1/listings/{member_listing}"),
            &manager.token,
            &[],
            &price
        )
        .await
        .0,
        403
    );
    app.stop().await;
}

#[tokio::test]
async fn a_helper_acts_only_for_its_assigned_households_and_every_action_is_recorded() {
    let app = TestApp::spawn().await;
    let helper = app.staff("helper").await;
    let other_helper = app.staff("helper").await;
    let household_phone = phone();
    let (status, reg) = app
        .post("/v1/households", Some(&helper.token), &json!({ "phone": household_phone, "display_name": "Bà Lan", "household": household_profile("Hộ bà Lan") }))
        .await;
    assert_eq!(status, 201, "{reg}");
    let household = reg["household"]["id"].as_str().unwrap().to_owned();
    let code = reg["activation_code"].as_str().unwrap().to_owned();

    // The helper lists a product for the household, saying so.
    let for_her = [("x-on-behalf-of", household.as_str())];
    let (status, listing) = app
        .post_with("/v1/listings", &helper.token, &for_her, &listing_body())
        .await;
    assert_eq!(status, 201, "{listing}");
    assert_eq!(listing["seller"]["id"], household.as_str());
    let listing = listing["id"].as_str().unwrap();
    let (status, _) = app
        .post_with(
            &format!("/v1/listings/{listing}/lots"),
            &helper.token,
            &for_her,
            &json!({ "lot_code": "LAN-01", "harvest_date": "2026-11-20", "quantity": "20" }),
        )
        .await;
    assert_eq!(status, 201);

    // Not without saying for whom, and not for a household that is not assigned to it.
    assert_eq!(
        app.post("/v1/listings", Some(&helper.token), &listing_body())
            .await
            .0,
        403
    );
    assert_eq!(
        app.post_with(
            "/v1/listings",
            &other_helper.token,
            &for_her,
            &listing_body()
        )
        .await
        .0,
        403
    );
    assert_eq!(
        app.patch(
            &format!("/v1/listings/{listing}"),
            &other_helper.token,
            &for_her,
            &json!({ "price_vnd": 1 })
        )
        .await
        .0,
        403
    );
    let stranger = app.register("household").await;
    let for_stranger = [("x-on-behalf-of", stranger.id.as_str())];
    assert_eq!(
        app.post_with(
            "/v1/listings",
            &helper.token,
            &for_stranger,
            &listing_body()
        )
        .await
        .0,
        403
    );
    // A household cannot claim to act for another.
    assert_eq!(
        app.post_with("/v1/listings", &stranger.token, &for_her, &listing_body())
            .await
            .0,
        403
    );

    // The household activates its account with the code and reads what was done in its name.
    let (status, session) = app
        .post(
            "/v1/accounts/activate",
            None,
            &json!({ "phone": household_phone, "code": code, "password": "mật khẩu an toàn" }),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let own = session["access_token"].as_str().unwrap();
    let (status, trail) = app
        .get(&format!("/v1/households/{household}/audit"), Some(own))
        .await;
    assert_eq!(status, 200, "{trail}");
    let by_helper: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor_id"] == helper.id.as_str() && e["on_behalf_of"] == household.as_str())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["household.registered", "listing.created", "stock.intake"] {
        assert!(by_helper.contains(&action), "{action} missing from {trail}");
    }
    // The code works once.
    let (status, _) = app
        .post(
            "/v1/accounts/activate",
            None,
            &json!({ "phone": household_phone, "code": code, "password": "mật khẩu khác nữa" }),
        )
        .await;
    assert_eq!(status, 401);
    // Nobody else reads the trail.
    assert_eq!(
        app.get(
            &format!("/v1/households/{household}/audit"),
            Some(&helper.token)
        )
        .await
        .0,
        403
    );
    let (_, operator) = token(Role::Operator);
    assert_eq!(
        app.get(
            &format!("/v1/households/{household}/audit"),
            Some(&operator)
        )
        .await
        .0,
        200
    );
    app.stop().await;
}
