"""Errors say, as attributes, what a program needs to act on them: transient or not, and what is at fault."""

from __future__ import annotations

import pickle

import pytest

from embedlib.db.session import connect
from embedlib.encode import remote as remote_module
from embedlib.encode.remote import RemoteEncoder
from embedlib.errors import ConfigError, DatabaseError, EncoderUnavailable, ModelError
from embedlib.options import Settings
from embedlib.testing.service import EmbeddingService


@pytest.mark.parametrize(("given", "option"), [({"batch_size": 0}, "batch_size"), ({"metric": "hamming"}, "metric")])
def test_a_bad_setting_names_its_option_and_is_not_transient(given, option):
    with pytest.raises(ConfigError) as refused:
        Settings.resolve(table="t", **given)
    assert (refused.value.option, refused.value.transient) == (option, False)


def test_a_server_not_there_is_transient_and_a_malformed_dsn_is_not():
    with pytest.raises(DatabaseError) as away:
        connect("postgresql://u:secret@127.0.0.1:1/db")
    assert away.value.transient
    with pytest.raises(DatabaseError) as malformed:
        connect("host=127.0.0.1 port=1 password=secret user")
    assert not malformed.value.transient


def test_a_service_failing_is_transient_a_key_refused_is_not_and_both_give_the_status(monkeypatch):
    monkeypatch.setattr(remote_module, "_BACKOFF_S", (0.01, 0.05))
    with EmbeddingService() as service:
        encoder = RemoteEncoder(service.url, retry_s=0.5)
        service.fail_next(1000, 503)
        with pytest.raises(EncoderUnavailable) as failing:
            encoder.encode(["a"])
        assert failing.value.transient
        service.heal()
        service.fail_next(1, 401)
        with pytest.raises(EncoderUnavailable) as refused:
            encoder.encode(["a"])
        assert (refused.value.transient, refused.value.status) == (False, 401)
        service.fail_next(1, 400)  # the request, perhaps one text, is wrong: not the service as a whole
        with pytest.raises(ModelError) as wrong:
            encoder.encode(["a"])
        assert getattr(wrong.value, "status", None) == 400 and not isinstance(wrong.value, EncoderUnavailable)


def test_errors_keep_their_attributes_through_a_process_boundary():
    """Errors raised in a worker process or a Ray actor come back pickled, and must come back whole."""
    for error in (
        EncoderUnavailable("the service is down", transient=True, status=503),
        ConfigError("batch_size must be a whole number >= 1, got 0", option="batch_size"),
        DatabaseError("cannot connect", transient=True),
    ):
        back = pickle.loads(pickle.dumps(error))
        assert (type(back), str(back), back.__dict__) == (type(error), str(error), error.__dict__)
    refused = remote_module._Refused("refused: HTTP 400", status=400)  # the one a text may be blamed for
    assert pickle.loads(pickle.dumps(refused)).status == 400
