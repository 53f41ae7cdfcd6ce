from labs_api.engines.chat.stop_text import StopSequenceFilter


def feed(stops, pieces):
    f = StopSequenceFilter(stops)
    out = [f.push(p) for p in pieces]
    return "".join(out) + f.flush(), f.stopped


def test_no_stops_passes_everything():
    assert feed([], ["a", "b"]) == ("ab", False)


def test_stop_split_across_pieces_is_never_emitted():
    assert feed(["END"], ["hello E", "N", "D more"]) == ("hello ", True)


def test_partial_match_that_does_not_complete_is_released():
    assert feed(["END"], ["hello EN", "ough"]) == ("hello ENough", False)


def test_earliest_of_several_stops_wins():
    assert feed(["b", "a"], ["xyab"]) == ("xy", True)


def test_held_text_is_flushed_at_the_end():
    f = StopSequenceFilter(["STOP"])
    assert f.push("abc ST") == "abc "
    assert f.flush() == "ST"
