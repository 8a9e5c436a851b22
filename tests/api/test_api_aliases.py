"""Model aliases: your names for your models, taken by every model route as `@alias`."""

from __future__ import annotations


def test_an_alias_names_a_model_everywhere_and_follows_a_move(service, make_model, tiny_checkpoint):  # noqa: ANN001
    client = service.client
    first = make_model(tiny_checkpoint, step=2)["model_id"]
    second = make_model(tiny_checkpoint, step=4)["model_id"]
    r = client.put(f"/models/{first}/aliases/best-digits")
    assert r.status_code == 200, r.text
    assert (r.json()["alias"], r.json()["model_id"]) == ("best-digits", first)
    model = client.get("/models/@best-digits").json()
    assert (model["id"], model["aliases"]) == (first, ["best-digits"])
    via_alias = client.get("/models/@best-digits/samples", params={"class": 3, "n": 4})
    via_id = client.get(f"/models/{first}/samples", params={"class": 3, "n": 4})
    assert via_alias.status_code == 200 and via_alias.content == via_id.content
    assert via_alias.headers["x-checkpoint-step"] == "2"

    # Moved (by hand, or by a sweep's promotion): every route follows.
    assert client.put(f"/models/{second}/aliases/best-digits").json()["model_id"] == second
    moved = client.get("/models/@best-digits/samples", params={"class": 3, "n": 4})
    assert (
        moved.headers["x-checkpoint-step"] == "4"
        and moved.headers["etag"] != via_alias.headers["etag"]
    )
    assert client.get(f"/models/{first}").json()["aliases"] == []
    listed = {m["id"]: m["aliases"] for m in client.get("/models").json()["items"]}
    assert listed[second] == ["best-digits"]
    assert client.put("/models/@best-digits/aliases/shipped").json()["model_id"] == second
    assert [a["alias"] for a in client.get("/aliases").json()["items"]] == [
        "best-digits",
        "shipped",
    ]

    assert client.delete("/aliases/best-digits").status_code == 204
    assert client.get("/models/@best-digits").status_code == 404
    assert client.delete("/aliases/best-digits").status_code == 404
    assert client.get(f"/models/{second}").status_code == 200  # the model stays


def test_aliases_are_per_owner_and_bad_names_are_refused(service, make_model):  # noqa: ANN001
    client = service.client
    mine = make_model(None)["model_id"]
    theirs = make_model(None, owner="bob")["model_id"]
    bob = service.as_user("bob")
    assert client.put(f"/models/{theirs}/aliases/best").status_code == 404  # not yours
    assert client.put(f"/models/{mine}/aliases/best").status_code == 200
    assert client.get("/models/@best", headers=bob).status_code == 404  # bob has no @best
    assert client.put(f"/models/{theirs}/aliases/best", headers=bob).status_code == 200
    assert client.get("/models/@best", headers=bob).json()["id"] == theirs
    assert client.get("/models/@best").json()["id"] == mine  # each owner's own

    r = client.put(f"/models/{mine}/aliases/Not%20OK")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "alias"
    assert "lowercase letters" in r.json()["detail"]
    assert client.get("/models/@Not-OK").status_code == 404  # no such alias can exist
    assert client.get("/models/@@x/samples", params={"class": 0}).status_code == 404
