"""chat_stream.py with Locust's web login switched on and no user able to log in (for the auth test)."""

from locust import events

from tokenstorm.loadgen.session import install
from tokenstorm.loadgen.users import ChatStreamUser

install()


@events.init.add_listener
def _login(environment, **_kwargs):
    if environment.web_ui is not None:
        environment.web_ui.app.config["SECRET_KEY"] = "test-only-secret"
        environment.web_ui.login_manager.user_loader(lambda user_id: None)


__all__ = ["ChatStreamUser"]
