"""Tasks of a module no test imports itself: reading their results must not import it."""

from taskmill import task

IMPORTED = True


@task()
def lonely() -> str:
    return "ran"
