"""recforge's OpenMP defaults: applied when unset, never over a user's setting."""

from recforge.utils.threads import OPENMP_DEFAULTS, configure_openmp


def test_sets_passive_waiting_when_unset():
    environ = {"PATH": "/bin"}
    assert configure_openmp(environ) == OPENMP_DEFAULTS
    assert environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_keeps_the_users_setting():
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert configure_openmp(environ) == {}
    assert environ["OMP_WAIT_POLICY"] == "ACTIVE"
