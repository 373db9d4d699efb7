"""The files tokenstorm ships beside its code: locustfiles/, configs/ and data/ (the offline
tokenizer file). Each is a link to the checkout's top-level folder of that name (one copy, which
`locust -f locustfiles/...` and `--scenario configs/...` use from a checkout); the wheel build
copies them in here, so an installed tokenstorm finds them with importlib.resources
(tokenstorm.core.assets)."""
