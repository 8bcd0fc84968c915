#!/usr/bin/env python3
"""Writes the generated part of the seed corpus (fuzz/corpus/<target>/gen-*).

Valid deliveries are signed with the unit tests' published vectors and the test-only keys in
tests/fixtures (HMAC with the standard library, RSA with `openssl`); hostile inputs reproduce
the shapes of issue 10 at sizes that keep each file small. Hand-written seeds (no `gen-`
prefix) live next to them. Rerun after changing this file: `python3 fuzz/seeds.py`.
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "gen-" + name), "wb") as f:
        f.write(data)


def msg(first, headers, body):
    if isinstance(body, str):
        body = body.encode()
    head = first + "\n" + "".join(f"{k}: {v}\n" for k, v in headers) + "\n"
    return head.encode() + body


def mac(alg, key, *parts):
    return hmac.new(key.encode(), b"".join(parts), alg)


def rsa_sign(key, digest, data):
    out = subprocess.run(
        ["openssl", "dgst", "-" + digest, "-sign", os.path.join(ROOT, key)],
        input=data, capture_output=True, check=True,
    ).stdout
    return base64.b64encode(out).decode()


# --- signature -------------------------------------------------------------------------------
DOC = "It's a Secret to Everybody"
HELLO = b"Hello, World!"
gh = mac(hashlib.sha256, DOC, HELLO).hexdigest()
write("signature", "github", msg("github", [("X-Hub-Signature-256", "sha256=" + gh),
      ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")], HELLO))
write("signature", "github-sha1", msg("github-sha1", [
    ("X-Hub-Signature", "sha1=" + mac(hashlib.sha1, DOC, HELLO).hexdigest())], HELLO))
write("signature", "gitea", msg("gitea", [("X-Gitea-Signature", gh),
      ("X-Gitea-Delivery", "d1")], HELLO))
write("signature", "forgejo", msg("gitea", [("X-Forgejo-Signature", gh)], HELLO))
write("signature", "bitbucket", msg("bitbucket", [("X-Hub-Signature", "sha256=" + gh),
      ("X-Request-UUID", "uuid-1")], HELLO))
write("signature", "gitlab", msg("gitlab", [("X-Gitlab-Token", "gitlab-token"),
      ("X-Gitlab-Event-UUID", "e-1")], b'{"object_kind":"push"}'))
slack_body = ("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
              "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
              "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
              "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
write("signature", "slack", msg("slack now=1531420618", [
    ("X-Slack-Signature", "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
    ("X-Slack-Request-Timestamp", "1531420618")], slack_body))
t = 1_700_000_000
sig = mac(hashlib.sha256, "whsec_test_secret", f"{t}.".encode(), b"{}").hexdigest()
write("signature", "stripe", msg("stripe", [("Stripe-Signature", f"t={t},v1={sig},v0=ignored")], b"{}"))
write("signature", "standard-webhooks", msg("standard_webhooks now=1614265330", [
    ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"), ("webhook-timestamp", "1614265330"),
    ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1a,ignored")],
    b'{"test": 2432232314}'))
write("signature", "hmac", msg("hmac", [
    ("X-Signature", "sha256=" + mac(hashlib.sha256, "hmac-secret", b"{}").hexdigest()),
    ("X-Delivery", "d-1")], b"{}"))
write("signature", "hmac-b64", msg("hmac-b64", [
    ("X-Signature", base64.b64encode(mac(hashlib.sha512, "hmac-secret", b"{}").digest()).decode())], b"{}"))
write("signature", "hmac-sha1", msg("hmac-sha1", [
    ("X-Signature", mac(hashlib.sha1, "hmac-secret", b"x").hexdigest())], b"x"))
write("signature", "token", msg("token", [("X-Token", "shared-token")], b""))
write("signature", "bearer", msg("bearer", [("Authorization", "Bearer shared-token")], b""))
payload = '{"id":1,"status_message":"Passed","branch":"main"}'
write("signature", "travis", msg("travis", [
    ("Signature", rsa_sign("tests/fixtures/travis-test.key", "sha1", payload.encode()))],
    urllib.parse.urlencode({"payload": payload})))
for scheme in ["github", "gitea", "bitbucket", "slack", "stripe", "standard_webhooks", "hmac",
               "hmac-b64", "token", "bearer", "gitlab"]:
    write("signature", "sign-" + scheme, msg(scheme + " sign", [], b'{"ref":"main"}'))
write("signature", "stripe-many", msg("stripe", [("Stripe-Signature", ",".join(["v1=00"] * 64) + ",t=1")], b"{}"))
write("signature", "duplicate", msg("github", [("X-Hub-Signature-256", "sha256=" + gh)] * 2, HELLO))
write("signature", "long-timestamp", msg("slack", [("X-Slack-Signature", "v0=" + "0" * 64),
      ("X-Slack-Request-Timestamp", "9" * 40)], b"{}"))

# --- sns -------------------------------------------------------------------------------------
TOPIC = "arn:aws:sns:eu-west-1:123456789012:alerts"
CERT = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
SUB = ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=" + TOPIC
       + "&Token=2336412f37fb687f5d51e6e2425c464d")


def sns(kind, version, **extra):
    m = {"Type": kind, "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn": TOPIC,
         "Message": '{"alarm": "cpu",\n "state": "ALARM"}', "Timestamp": "2027-01-01T00:00:00.000Z",
         "SignatureVersion": version, "SigningCertURL": CERT}
    if kind == "Notification":
        m["Subject"] = "CPU alarm"
        m["UnsubscribeURL"] = ("https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn="
                               + TOPIC + ":c9135db0")
        m["MessageAttributes"] = {"a": {"Type": "String", "Value": "b"}}
        keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        m["Token"] = "2336412f37fb687f5d51e6e2425c464d"
        m["SubscribeURL"] = SUB
        keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    m.update(extra)
    text = "".join(f"{k}\n{m[k]}\n" for k in keys if k in m)
    m["Signature"] = rsa_sign("tests/fixtures/sns/leaf.key", "sha1" if version == "1" else "sha256",
                              text.encode())
    return json.dumps(m).encode()


hdr = [("x-amz-sns-message-type", "Notification"), ("x-amz-sns-topic-arn", TOPIC),
       ("x-amz-sns-message-id", "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324")]
note2 = sns("Notification", "2")
with open(os.path.join(CORPUS, "sns", "notification-v2"), "wb") as f:  # used by the target
    f.write(msg("", hdr, note2))
write("sns", "notification-v1", msg("", hdr, sns("Notification", "1")))
write("sns", "notification-anchored", msg("anchored", hdr, note2))
write("sns", "notification-der", msg("cert=der", [], note2))
write("sns", "notification-rogue", msg("anchored cert=rogue", [], note2))
write("sns", "subscribe", msg("", [("x-amz-sns-message-type", "SubscriptionConfirmation")],
                              sns("SubscriptionConfirmation", "2")))
write("sns", "unsubscribe", msg("", [], sns("UnsubscribeConfirmation", "1")))
write("sns", "cert-input-pem", msg("cert=input", [], open(os.path.join(ROOT, "tests/fixtures/sns/leaf.pem"), "rb").read()))
write("sns", "cert-input-der", msg("cert=input", [], open(os.path.join(ROOT, "tests/fixtures/sns/leaf.der"), "rb").read()))
write("sns", "cert-input-chain", msg("anchored cert=input", [],
      open(os.path.join(ROOT, "tests/fixtures/sns/leaf.pem"), "rb").read()
      + open(os.path.join(ROOT, "tests/fixtures/sns/ca.pem"), "rb").read()))
write("sns", "stale", msg("now=1900000000", [], note2))
write("sns", "newline-field", msg("", [], sns("Notification", "2", MessageId="a\nTopicArn")))
write("sns", "bad-url", msg("", [], sns("Notification", "2",
      SigningCertURL="https://sns.eu-west-1.amazonaws.com.evil.example/x.pem")))
write("sns", "dup-key", msg("", [], b'{"Type":"Notification","Type":"Notification"}'))

# --- hook (whole requests) -------------------------------------------------------------------
write("hook", "github-signed", msg("POST /hook/github/deploy", [
    ("Content-Type", "application/json"), ("X-Hub-Signature-256", "sha256=" + mac(hashlib.sha256, DOC, b'{"ref":"main"}').hexdigest()),
    ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"), ("X-GitHub-Event", "push")], b'{"ref":"main"}'))
write("hook", "github-ping", msg("POST /hook/github/deploy", [
    ("Content-Type", "application/json"), ("X-Hub-Signature-256", "sha256=" + mac(hashlib.sha256, DOC, b'{"zen":"x"}').hexdigest()),
    ("X-GitHub-Event", "ping")], b'{"zen":"x"}'))
write("hook", "huge-content-length", msg("POST /hook/small", [("Content-Length", "18446744073709551616")], b"{}"))
write("hook", "over-cap", msg("POST /hook/small", [("Content-Type", "application/json"), ("Content-Length", "65")], b"[" + b"1," * 31 + b"1]"))
write("hook", "negative-content-length", msg("POST /hook/github", [("Content-Length", "-1")], b"x"))
write("hook", "encoded-newlines", msg("POST /hook/a%0A%0Ab", [], b"x"))
write("hook", "encoded-slashes", msg("POST /hook/%2Fgithub%2Fdeploy%2F", [("Content-Type", "text/plain")], b"x"))
write("hook", "dot-segments", msg("POST /hook/github/../deploy/./x", [], b""))
write("hook", "yaml-rule", msg("POST /hook/yaml", [("Content-Type", "application/x-yaml")], b"a: &x [1, 2]\nb: *x\n"))
write("hook", "form-rule", msg("POST /hook/github", [("Content-Type", "application/x-www-form-urlencoded")],
      b"arg=[1,2]&arg=x&kwarg={a: 1}&k=v&k=w"))
write("hook", "lowstate-run", msg("POST /run", [("Content-Type", "application/json")],
      b'[{"client":"local","tgt":"*","fun":"test.ping","username":"u","password":"p","eauth":"pam"}]'))
write("hook", "login-form", msg("POST /login", [("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/x-yaml")],
      b"username=u&password=p&eauth=pam"))
write("hook", "odd-accept", msg("POST /hook/github", [("Accept", "text/html;q=0.9, */*;q=NaN, application/x-yaml;q=1e9")], b"{}"))
write("hook", "not-acceptable", msg("POST /hook/github", [("Accept", "image/png")], b"{}"))
write("hook", "allowlist", msg("POST /hook/local/x", [], b"{}"))
write("hook", "tornado-form", msg("POST /tornado/hook/github?a=1&a=2&b=%20x%20", [
    ("Content-Type", "application/x-www-form-urlencoded"), ("X-Tag", "one"), ("X-Tag", "two")], b"a=3&c=+y+&c"))
write("hook", "tornado-json", msg("POST /tornado/hook?x", [("Content-Type", "application/json")], b'{"k": [1]}'))
write("hook", "tornado-lowstate", msg("POST /tornado/run", [("Content-Type", "text/plain")],
      b'[{"client":"runner","fun":"test.arg","arg":"x"}]'))
write("hook", "slack-challenge", msg("POST /hook/slack", [("Content-Type", "application/json"),
      ("X-Slack-Request-Timestamp", "1531420618"), ("X-Slack-Signature", "v0=" + "0" * 64)],
      b'{"type":"url_verification","challenge":"c"}'))
write("hook", "get-index", msg("GET /", [("Accept", "application/x-yaml")], b""))

# --- body: hostile shapes of issue 10 (small versions) and valid examples ----------------------
write("body", "deep-flow-map", msg("yaml", [], "{a: " * 2000))
write("body", "deep-flow-seq", msg("yaml", [], "[" * 4000))
# Issue 10 item 1 at 1/2.5 and 3/4 of the reported size: seconds of CPU each before the fix.
write("body", "deep-flow-map-64k", msg("yaml", [], "{a: " * 16000))
write("body", "deep-flow-seq-30k", msg("yaml", [], "[" * 30000))
write("body", "deep-block", msg("yaml", [], "".join(" " * i + "a:\n" for i in range(150))))
bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(["*" + chr(97 + i)] * 9) + "]\n" for i in range(8))
write("body", "alias-bomb", msg("yaml", [], bomb))
flow_bomb = "{a: &a [x,x,x,x,x,x,x,x,x], " + ", ".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(["*" + chr(97 + i)] * 9) + "]" for i in range(8)) + "}"
write("body", "form-arg-alias-bomb", msg("form", [], "&".join(
    ["arg=" + urllib.parse.quote(flow_bomb)] * 20)))
write("body", "form-kwarg-alias-bomb", msg("form", [], "kwarg=" + urllib.parse.quote(flow_bomb)))
write("body", "alias-long-scalar", msg("yaml", [], "a: &x " + "y" * 4000 + "\nb: [" + ",".join(["*x"] * 2000) + "]\n"))
# A node budget does not bound bytes: 22k aliases of one 64 KiB scalar (130 KB) build 1.4 GB.
write("body", "alias-long-scalar-oom", msg("yaml", [], "a: &x " + "y" * 65536 + "\nb: [" + ",".join(["*x"] * 22000) + "]\n"))
write("body", "many-keys", msg("json", [], "{" + ",".join(f'"k{i}":{i}' for i in range(1500)) + "}"))
write("body", "many-documents", msg("yaml", [], "---\na: 1\n" * 500))
write("body", "deep-json", msg("json", [], "[" * 3000 + "]" * 3000))
write("body", "lowstate-json", msg("json", [], '[{"client":"local","tgt":"*","fun":"test.arg","arg":[1,"a"],"kwarg":{"k":"v"}}]'))
write("body", "lowstate-yaml", msg("yaml", [], "- client: local\n  tgt: '*'\n  fun: test.ping\n  arg: [1, two]\n"))
write("body", "lowstate-form", msg("form", [], "client=local&tgt=*&fun=test.arg&arg=1&arg=[2,3]&arg={a: b}&kwarg={x: 1}&arg=k=v"))
write("body", "text-json", msg("text", [], '{"a": 1}'))
write("body", "vnd-json", msg("vnd+json", [], '{"a": [1.5e308, -0, "\\ud800"]}'))
write("body", "yaml-tags", msg("yaml", [], "a: !!binary aGk=\nb: !custom {x: 1}\nc: ~\nd: 0x1f\n"))
write("body", "content-type-params", msg("Application/JSON; charset=utf-8", [], "[]"))
write("body", "unsupported", msg("octet", [], "\x00\x01"))

# --- frame: bus frames -----------------------------------------------------------------------
def mp_str(s):
    b = s.encode()
    return (bytes([0xa0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b


def frame(event, prefixed):
    body = b"\x82\xa4head\x80\xa4body" + (b"\xc4" + bytes([len(event)]) if len(event) < 256
                                          else b"\xc5" + len(event).to_bytes(2, "big")) + event
    return (len(body).to_bytes(4, "big") + body) if prefixed else body


ev = b"salt/job/20261122193030245676/ret/m1\n\n" + b"\x83" + mp_str("_stamp") + b"\xc7\x1a\x4e" + b"2026-11-22T19:30:30.245676" \
    + mp_str("return") + b"\x93\x01\xc3\xc0" + mp_str("jid") + mp_str("20261122193030245676")
err = b"salt/job/1/error\n\n\x82" + mp_str("password") + mp_str("hunter2") + mp_str("load") + b"\x81" + mp_str("token") + mp_str("t")
write("frame", "prefixed", b"\x01" + frame(ev, True) + frame(err, True))
write("frame", "bare", b"\x05" + frame(ev, False) + frame(err, False))
write("frame", "mixed-small-reads", b"\x00" + frame(ev, True) + frame(ev, False))
write("frame", "too-big-prefix", b"\x03" + b"\x7f\xff\xff\xff" + b"\x82")
write("frame", "deep", b"\x02" + b"\x81\xa4body" + b"\x91" * 600)
write("frame", "huge-counts", b"\x02" + b"\xdf\xff\xff\xff\xff" + b"\xdd\xff\xff\xff\xff" * 4)
write("frame", "c1", b"\x02" + b"\x82\xa4head\xc1")

# --- reply: clear-channel replies ------------------------------------------------------------
tok = b"\x86" + mp_str("token") + b"\xda\x00\x40" + b"a" * 64 + mp_str("name") + mp_str("alice") + mp_str("eauth") + mp_str("pam") \
    + mp_str("start") + b"\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00" + mp_str("expire") + b"\xce\x00\x00\xa8\xc1" \
    + mp_str("groups") + b"\x93" + mp_str("ops") + b"\x07" + mp_str("web")
write("reply", "token", tok)
write("reply", "publish", b"\x81" + mp_str("load") + b"\x83" + mp_str("jid") + mp_str("20261122193030245676")
      + mp_str("minions") + b"\x92" + mp_str("m1") + mp_str("m2") + mp_str("missing") + b"\x90")
write("reply", "auth-error", b"\x81" + mp_str("error") + b"\x82" + mp_str("name") + mp_str("AuthenticationError")
      + mp_str("message") + mp_str("nope"))
write("reply", "bad-load", mp_str("bad load"))
write("reply", "cluster-retry", b"\x82" + mp_str("ret") + b"\xc2" + mp_str("cluster_retry") + b"\xc3")
write("reply", "invalid-utf8", b"\x81\xa1k\xa2\xff\xfe")
write("reply", "runner", b"\x82" + mp_str("tag") + mp_str("salt/run/1") + mp_str("jid") + mp_str("1"))
write("reply", "wheel", b"\x81" + mp_str("data") + b"\x83" + mp_str("return") + b"\x81\x01\x02" + mp_str("success") + b"\xc3"
      + mp_str("nan") + b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00")
write("reply", "huge-array", b"\xdd\xff\xff\xff\xff\x01")
write("reply", "deep", b"\x91" * 2000)

# --- accept ----------------------------------------------------------------------------------
for name, value in [("json", "application/json"), ("yaml", "application/x-yaml"),
                    ("q-order", "text/html, application/x-yaml;q=0.5, application/json;q=0.1"),
                    ("q-zero", "application/json;q=0"), ("q-nan", "application/json;q=NaN, */*;q=inf"),
                    ("many", ",".join(["a/b;q=0.5"] * 500)), ("params", "application/json; q = 0.3 ; level=1; q=0.9"),
                    ("repeated", "text/html\napplication/yaml;q=0.2\n*/*;q=0.1"), ("empty-parts", ",,;,;q=1,"),
                    ("upper", "APPLICATION/X-YAML"), ("wildcard", "application/*;q=0.8")]:
    write("accept", name, value)

# --- config ----------------------------------------------------------------------------------
write("config", "full", """interface: 127.0.0.1
ret_port: 4506
ipc_mode: tcp
rest_cherrypy:
  port: 8000
  host: 0.0.0.0
  disable_ssl: true
  webhook_url: /hook
  max_request_body_size: 1048576
saltgate:
  bus: builtin
  unmatched_hooks: refuse
  trusted_proxies: [10.0.0.0/8]
  hooks:
    - path: github/deploy
      auth: none
      verify: {github: {secret_file: github.secret, legacy_sha1: true}}
      allow_from: [140.82.112.0/20, "2001:db8::/32"]
      rate: {per_second: 5, burst: 20}
      max_body: 262144
    - path: hmac
      verify: {hmac: {secret_env: HOOK_SECRET, header: X-Sig, algorithm: sha512, encoding: base64, prefix: "s=", delivery_header: X-Id}}
    - path: travis
      verify: {travis: {public_key_files: [travis.pub]}}
    - path: sns
      verify: {sns: {topic_arns: ["arn:aws:sns:eu-west-1:123456789012:alerts"], cert_host_suffix: example.com, tolerance_secs: 60}}
    - path: token
      verify: {token: {secrets: [{env: HOOK_SECRET}, {file: github.secret}]}}
""")
write("config", "includes", "include: [extra.conf, 'master.d/*.conf']\ndefault_include: master.d/*.conf\n#--- a.conf\nrest_cherrypy: {port: 8001}\n#--- b.conf\nrest_cherrypy: {host: '::1'}\nsaltgate: {bus: auto}\n")
write("config", "bad-keys", "rest_cherrypy: {port: 99999999999}\nsaltgate: {hooks: [{path: '', verify: {a: {}, b: {}}}]}\n")
write("config", "alias-bomb", bomb)
write("config", "deep", "saltgate: " + "{a: " * 1000)
write("config", "root-dir", "root_dir: /nonexistent\nsock_dir: " + "x/" * 60 + "\nipc_mode: ipc\n")
