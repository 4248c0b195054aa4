"""Argument checks shared by the config and the components it builds.

Each check raises a `ValueError` in the Keras form, naming the argument, what
it must be and the value received:

    `full_steps` must be >= 2. Received: full_steps=1

`owner` prefixes the name inside the backticks with the config section it
belongs to (`"predictor."`), so that the message names the field a user
writes; the `Received:` part keeps the bare name.
"""


def check_int(name, value, low=None, high=None, owner=""):
    """Checks that `value` is an integer (not a bool) in `[low, high]`.

    Args:
        name: the argument's name.
        value: the value received.
        low: the smallest value allowed (`None`: no bound).
        high: the largest value allowed (`None`: no bound).
        owner: the prefix of `name` in the message (a config section).

    Returns:
        `value`.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"`{owner}{name}` must be an integer. Received: {name}={value!r}"
        )
    return check_range(name, value, low, high, owner)


def check_number(name, value, low=None, high=None, low_open=False,
                 owner=""):
    """Checks that `value` is a finite number (not a bool) in `[low, high]`
    (`(low, high]` with `low_open`).

    Returns:
        `value`.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"`{owner}{name}` must be a number. Received: {name}={value!r}"
        )
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(
            f"`{owner}{name}` must be finite. Received: {name}={value!r}"
        )
    if low_open and low is not None and value <= low:
        raise ValueError(
            f"`{owner}{name}` must be > {low}. Received: {name}={value!r}"
        )
    return check_range(name, value, None if low_open else low, high, owner)


def check_range(name, value, low=None, high=None, owner=""):
    """Checks `low <= value <= high` (a `None` bound is not checked).

    Returns:
        `value`.
    """
    if low is not None and value < low:
        raise ValueError(
            f"`{owner}{name}` must be >= {low}. Received: {name}={value!r}"
        )
    if high is not None and value > high:
        raise ValueError(
            f"`{owner}{name}` must be <= {high}. Received: {name}={value!r}"
        )
    return value


def check_bool(name, value, owner=""):
    """Checks that `value` is a bool.

    Returns:
        `value`.
    """
    if not isinstance(value, bool):
        raise ValueError(
            f"`{owner}{name}` must be a boolean. Received: {name}={value!r}"
        )
    return value


def check_choice(name, value, choices, owner=""):
    """Checks that `value` is one of `choices`.

    Returns:
        `value`.
    """
    if value not in choices:
        raise ValueError(
            f"`{owner}{name}` must be one of {list(choices)}. "
            f"Received: {name}={value!r}"
        )
    return value


def check_optional_str(name, value, owner=""):
    """Checks that `value` is a string or `None`.

    Returns:
        `value`.
    """
    if value is not None and not isinstance(value, str):
        raise ValueError(
            f"`{owner}{name}` must be a string or None. "
            f"Received: {name}={value!r}"
        )
    return value
