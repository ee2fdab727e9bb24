from fanout.backplane import SEQ_PER_MS, entry_id, seq_of


def test_stream_ids_map_to_increasing_seqs_and_back():
    ids = ["1700000000000-0", "1700000000000-1", "1700000000000-999999", "1700000000001-0"]
    seqs = [seq_of(i) for i in ids]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert [entry_id(s) for s in seqs] == ids
    assert seq_of(b"5-3") == 5 * SEQ_PER_MS + 3


def test_seq_fits_the_id_parser_for_centuries():
    # parse_id accepts up to 19 digits; ms * 1e6 stays below that until 2286.
    assert len(str(seq_of("9999999999999-999999"))) == 19
