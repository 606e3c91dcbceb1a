//! Who may change what: each refusal is a 403.

use nongsan_shared::auth::Role;
use serde_json::json;

use crate::support::{
    TestApp,
    calls::{household_profile, id_of, listing_body, phone},
    client::Request,
    user::User,
};

#[tokio::test]
async fn a_household_cannot_change_another_households_listing() {
    let app = TestApp::spawn().await;
    let owner = app.api.register(Role::Household).await;
    let other = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&owner, "10").await;
    let (status, body) = app
        .api
        .patch(
            &format!("/v1/listings/{listing}"),
            &other,
            &json!({ "price_vnd": 1000 }),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = app
        .api
        .post(
            &format!("/v1/listings/{listing}/lots"),
            Some(&other),
            &json!({ "lot_code": "X1", "harvest_date": "2026-11-20", "quantity": "5" }),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .api
        .post(
            &format!("/v1/listings/{listing}/status"),
            Some(&other),
            &json!({ "status": "paused" }),
        )
        .await;
    assert_eq!(status, 403);
    // The owner can.
    let (status, body) = app
        .api
        .patch(
            &format!("/v1/listings/{listing}"),
            &owner,
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
    let buyer = app.api.register(Role::Buyer).await;
    let (status, body) = app
        .api
        .post("/v1/listings", Some(&buyer), &listing_body())
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
    let (status, _) = app.api.post("/v1/listings", None, &listing_body()).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn a_manager_changes_only_the_cooperatives_and_its_members_listings() {
    let app = TestApp::spawn().await;
    let manager = app.api.staff(Role::CooperativeManager).await;
    let other_manager = app.api.staff(Role::CooperativeManager).await;
    let member = app.api.register(Role::Household).await;
    let outsider = app.api.register(Role::Household).await;
    let coop_body = json!({ "name": "HTX Rau sạch Đơn Dương", "tax_code": "5801234567", "address": { "province_code": "68", "commune_code": "24931" } });
    let coop_id = app.api.create_cooperative(&manager, &coop_body).await;
    let (status, _) = app.api.add_member(&manager, &coop_id, &member).await;
    assert_eq!(status, 200);

    let member_listing = app.api.listing_with_stock(&member, "10").await;
    let outsider_listing = app.api.listing_with_stock(&outsider, "10").await;
    let mut pooled = listing_body();
    pooled["cooperative_id"] = json!(coop_id);
    let pooled = id_of(&app.api.create_listing(&manager, &pooled).await);

    let price = json!({ "price_vnd": 60000 });
    assert_eq!(
        app.api
            .patch(&format!("/v1/listings/{member_listing}"), &manager, &price)
            .await
            .0,
        200
    );
    assert_eq!(
        app.api
            .patch(&format!("/v1/listings/{pooled}"), &manager, &price)
            .await
            .0,
        200
    );
    assert_eq!(
        app.api
            .patch(
                &format!("/v1/listings/{outsider_listing}"),
                &manager,
                &price
            )
            .await
            .0,
        403
    );
    assert_eq!(
        app.api
            .patch(&format!("/v1/listings/{pooled}"), &other_manager, &price)
            .await
            .0,
        403
    );
    assert_eq!(
        app.api
            .patch(
                &format!("/v1/listings/{member_listing}"),
                &other_manager,
                &price
            )
            .await
            .0,
        403
    );
    // Another manager cannot add members to this cooperative.
    let (status, _) = app
        .api
        .add_member(&other_manager, &coop_id, &outsider)
        .await;
    assert_eq!(status, 403);
    // A member that left is no longer the manager's to change.
    let res = app
        .api
        .send(
            Request::delete(format!("/v1/cooperatives/{coop_id}/members/{}", member.id))
                .by(&manager),
        )
        .await;
    assert_eq!(res.status, 204);
    assert_eq!(
        app.api
            .patch(&format!("/v1/listings/{member_listing}"), &manager, &price)
            .await
            .0,
        403
    );
    app.stop().await;
}

#[tokio::test]
async fn a_helper_acts_only_for_its_assigned_households_and_every_action_is_recorded() {
    let app = TestApp::spawn().await;
    let helper = app.api.staff(Role::Helper).await;
    let other_helper = app.api.staff(Role::Helper).await;
    let household_phone = phone();
    let (status, reg) = app
        .api
        .post("/v1/households", Some(&helper), &json!({ "phone": household_phone, "display_name": "Bà Lan", "household": household_profile("Hộ bà Lan") }))
        .await;
    assert_eq!(status, 201, "{reg}");
    let household = reg["household"]["id"].as_str().unwrap().to_owned();
    let code = reg["activation_code"].as_str().unwrap().to_owned();

    // The helper lists a product for the household, saying so.
    let helper_for_her = helper.acting_for(&household);
    let listing = app
        .api
        .create_listing(&helper_for_her, &listing_body())
        .await;
    assert_eq!(listing["seller"]["id"], household.as_str());
    let listing = id_of(&listing);
    app.api
        .add_lot(&helper_for_her, &listing, "LAN-01", "2026-11-20", "20")
        .await;

    // Not without saying for whom, and not for a household that is not assigned to it.
    let create_as = async |who: &User| {
        app.api
            .post("/v1/listings", Some(who), &listing_body())
            .await
            .0
    };
    assert_eq!(create_as(&helper).await, 403);
    assert_eq!(create_as(&other_helper.acting_for(&household)).await, 403);
    assert_eq!(
        app.api
            .patch(
                &format!("/v1/listings/{listing}"),
                &other_helper.acting_for(&household),
                &json!({ "price_vnd": 1 })
            )
            .await
            .0,
        403
    );
    let stranger = app.api.register(Role::Household).await;
    assert_eq!(create_as(&helper.acting_for(&stranger.id)).await, 403);
    // A household cannot claim to act for another.
    assert_eq!(create_as(&stranger.acting_for(&household)).await, 403);

    // The household activates its account with the code and reads what was done in its name.
    let (status, session) = app
        .api
        .post(
            "/v1/accounts/activate",
            None,
            &json!({ "phone": household_phone, "code": code, "password": "mật khẩu an toàn" }),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let own = User::from_session(&session, &household_phone);
    let (status, trail) = app
        .api
        .get(&format!("/v1/households/{household}/audit"), Some(&own))
        .await;
    assert_eq!(status, 200, "{trail}");
    let by_helper: Vec<&str> = trail["items"]
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
        .api
        .post(
            "/v1/accounts/activate",
            None,
            &json!({ "phone": household_phone, "code": code, "password": "mật khẩu khác nữa" }),
        )
        .await;
    assert_eq!(status, 401);
    // Nobody else reads the trail.
    assert_eq!(
        app.api
            .get(&format!("/v1/households/{household}/audit"), Some(&helper))
            .await
            .0,
        403
    );
    let operator = User::minted(Role::Operator);
    assert_eq!(
        app.api
            .get(
                &format!("/v1/households/{household}/audit"),
                Some(&operator)
            )
            .await
            .0,
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn the_public_household_view_has_no_street_and_no_point() {
    let app = TestApp::spawn().await;
    let household = app.api.register(Role::Household).await;
    let path = format!("/v1/households/{}", household.id);
    let farm = json!({ "farm_location": { "lat": 11.7512, "lon": 108.5456 } });
    let (status, full) = app.api.patch(&path, &household, &farm).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["address"]["street"], "Thôn Lạc Lâm");
    // A helper registers another household, which it then acts for.
    let helper = app.api.staff(Role::Helper).await;
    let (status, reg) = app
        .api
        .post("/v1/households", Some(&helper), &json!({ "phone": phone(), "display_name": "Bà Lan", "household": household_profile("Hộ bà Lan") }))
        .await;
    assert_eq!(status, 201, "{reg}");
    let helped = reg["household"]["id"].as_str().unwrap().to_owned();

    // Anyone else, signed in or not, sees the name, commune and province only.
    let buyer = app.api.register(Role::Buyer).await;
    let other_household = app.api.register(Role::Household).await;
    for who in [
        None,
        Some(&buyer),
        Some(&other_household),
        Some(&helper.acting_for(&household.id)),
    ] {
        let (status, view) = app.api.get(&path, who).await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["id"], household.id.as_str());
        assert_eq!(view["name"], full["name"]);
        assert_eq!(view["address"]["province_code"], "68");
        assert_eq!(view["address"]["commune_code"], "24931");
        let text = view.to_string();
        assert!(
            view["address"].get("street").is_none()
                && view.get("farm_location").is_none()
                && !text.contains("Lạc Lâm")
                && !text.contains("108.5"),
            "the public view shows the street or the point: {view}"
        );
    }
    // The household, its helper and an operator see the full profile.
    let operator = User::minted(Role::Operator);
    for (who, id) in [
        (&household, household.id.as_str()),
        (&operator, household.id.as_str()),
        (&helper.acting_for(&helped), helped.as_str()),
    ] {
        let (status, view) = app
            .api
            .get(&format!("/v1/households/{id}"), Some(who))
            .await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["address"]["street"], "Thôn Lạc Lâm", "{view}");
    }
    let (_, own) = app.api.get(&path, Some(&household)).await;
    assert_eq!(own["farm_location"]["lon"], 108.5456, "{own}");
    // A farm point sent as null is taken off (it was kept before); a field not sent stays.
    let (status, own) = app
        .api
        .patch(&path, &household, &json!({ "farm_location": null }))
        .await;
    assert_eq!(status, 200, "{own}");
    assert!(own["farm_location"].is_null(), "{own}");
    assert_eq!(own["address"]["street"], "Thôn Lạc Lâm", "{own}");
    app.stop().await;
}
