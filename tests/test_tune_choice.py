"""`stpn tune`'s choice between grid choices (all_snippets), by hand rows."""

from stpn_tf.workflows.tune import choose_grid


def row(activitynet: float, th14kit: float, objective: str = "min") -> dict:
    value = {"min": min(activitynet, th14kit), "activitynet": activitynet, "th14kit": th14kit}[objective]
    return {"protocols": {"activitynet": {"average_mAP": activitynet}, "th14kit": {"average_mAP": th14kit}},
            "objective": value}


def found(grid_chosen, snippets_chosen, objective="min", default=(.30, .30)):
    return {False: {"tuning_default": row(*default, objective), "tuning": row(*grid_chosen, objective)},
            True: {"tuning_default": row(.10, .10, objective), "tuning": row(*snippets_chosen, objective)}}


def test_the_better_objective_wins():
    # min: grid .32, every snippet .35 -> every snippet.
    assert choose_grid(found((.33, .32), (.36, .35)), False, "min") is True
    assert choose_grid(found((.36, .35), (.33, .32)), False, "min") is False


def test_ties_keep_the_earlier_grid_choice():
    assert choose_grid(found((.34, .33), (.35, .33)), False, "min") is False


def test_a_grid_choice_below_the_paper_default_under_a_covered_protocol_is_not_eligible():
    # Every snippet: ActivityNet .40 but toolkit .29, below the default grid's paper default (.30): under
    # "min" not eligible (the floor is the default grid's, not its own start .10).
    assert choose_grid(found((.31, .31), (.40, .29)), False, "min") is False
    # Ranked by ActivityNet alone the toolkit is not covered: every snippet wins with .40.
    assert choose_grid(found((.31, .31), (.40, .29), "activitynet"), False, "activitynet") is True
    # By the toolkit alone: .31 vs .29, the grid.
    assert choose_grid(found((.31, .31), (.40, .29), "th14kit"), False, "th14kit") is False
