"""PL011 model (devmodel/pl011.py) against the PL011 TRM (DDI 0183) register map."""
from devmodel.pl011 import FIFO_DEPTH, INT_RX, INT_TX, PL011, PL011_REGS
from devmodel.trace import ListSink, Tracer


def make():
    out, log = bytearray(), []
    dev = PL011(out.extend, log=lambda cat, msg: log.append((cat, msg)))
    return dev, out, log


def test_dr_write_transmits_low_byte_in_any_width():
    dev, out, log = make()
    dev.write(0x030, 0x301, 4)                 # UARTEN | TXE | RXE
    dev.write(0x000, ord("h"), 4)
    dev.write(0x000, 0x100 | ord("i"), 1)      # strb: only the byte goes out
    dev.write(0x000, ord("\n"), 2)
    assert bytes(out) == b"hi\n"
    assert dev.transmitted == 3 and log == []


def test_flags_report_empty_fifos_and_never_full():
    dev, _, _ = make()
    fr = dev.read(0x018, 4)
    assert fr & (1 << 7) and fr & (1 << 4)     # TXFE, RXFE
    assert not fr & (1 << 5) and not fr & (1 << 3)   # TXFF, BUSY
    assert dev.read(0x018, 1) == fr & 0xFF
    dev.write(0x018, 0, 4)                      # read-only
    assert dev.read(0x018, 4) == fr


def test_reset_values_and_id_registers():
    dev, _, _ = make()
    assert dev.read(0x030, 4) == 0x300          # UARTCR: TXE | RXE
    assert dev.read(0x034, 4) == 0x12           # UARTIFLS
    ids = [dev.read(off, 4) for off in range(0xFE0, 0x1000, 4)]
    assert ids[4:] == [0x0D, 0xF0, 0x05, 0xB1]  # PrimeCell ID
    assert ids[0] == 0x11 and ids[1] == 0x10 and ids[2] & 0xF == 0x4   # part number 0x011, designer 0x41


def test_config_registers_keep_written_bits_only():
    dev, _, _ = make()
    dev.write(0x024, 0xFFFFFFFF, 4)
    assert dev.read(0x024, 4) == 0xFFFF         # UARTIBRD is 16 bits
    dev.write(0x028, 0xFF, 4)
    assert dev.read(0x028, 4) == 0x3F           # UARTFBRD is 6 bits


def test_disabled_uart_still_transmits_and_logs_guest_error():
    dev, out, log = make()
    dev.write(0x030, 0, 4)
    dev.write(0x000, ord("x"), 4)
    assert bytes(out) == b"x"
    assert log and log[0][0] == "guest_errors" and "UARTEN" in log[0][1]


def test_bad_accesses_are_raz_wi_and_logged():
    dev, out, log = make()
    assert dev.read(0x800, 4) == 0
    dev.write(0x800, 1, 4)
    dev.write(0x001, 1, 1)                      # misaligned
    assert dev.read(0x000, 8) == 0              # 64-bit access to a 32-bit register
    assert len(log) == 4 and all(c == "guest_errors" for c, _ in log)
    assert "0x800" in log[0][1]
    assert bytes(out) == b""


def make_irq():
    lines = []
    dev = PL011(lambda b: None, irq=lines.append)
    return dev, lines


def test_interrupt_mask_is_stored_and_gates_the_line():
    dev, lines = make_irq()
    dev.write(0x038, 0x10, 4)
    assert dev.read(0x038, 4) == 0x10
    dev.write(0x038, 0xFFFFF, 4)
    assert dev.read(0x038, 4) == 0x7FF and lines == []        # 11 mask bits; nothing raw pending yet


def test_transmit_interrupt_as_qemu_7_2():
    """RIS 0 at reset; every UARTDR write sets TXRIS; MIS = RIS & IMSC; UARTICR clears; UARTINTR follows MIS
    (what guest_fw/tests/irq_uart.c reads on QEMU 7.2)."""
    dev, lines = make_irq()
    assert (dev.read(0x03C, 4), dev.read(0x040, 4)) == (0, 0)
    dev.write(0x000, ord("a"), 1)
    assert (dev.read(0x03C, 4), dev.read(0x040, 4), lines) == (INT_TX, 0, [])
    dev.write(0x038, INT_TX, 4)                      # unmask: the line rises at once
    assert dev.read(0x040, 4) == INT_TX and lines == [True]
    dev.write(0x044, INT_TX, 4)                      # clear
    assert (dev.read(0x03C, 4), lines) == (0, [True, False])
    dev.write(0x000, ord("b"), 4)
    assert lines == [True, False, True]
    dev.write(0x038, 0, 4)                           # mask: the line falls, RIS stays
    assert lines[-1] is False and dev.read(0x03C, 4) == INT_TX
    dev.write(0x044, 0, 4)
    assert dev.read(0x03C, 4) == INT_TX              # writing 0 clears nothing


def test_receive_fifo_flags_and_rx_interrupt():
    dev, lines = make_irq()
    dev.write(0x038, INT_RX, 4)
    assert dev.receive(b"xy") == 1                   # FIFO disabled (UARTLCR_H.FEN=0): one entry
    fr = dev.read(0x018, 4)
    assert not fr & (1 << 4) and fr & (1 << 6)       # RXFE clear, RXFF set
    assert lines == [True] and dev.read(0x03C, 4) == INT_RX
    assert dev.read(0x000, 4) == ord("x") and lines == [True, False]
    assert dev.read(0x018, 4) & (1 << 4) and dev.read(0x000, 4) == 0     # empty again: RXFE, DR reads 0
    dev.write(0x02C, 1 << 4, 4)                      # FEN: 16 entries
    assert dev.receive(bytes(range(20))) == FIFO_DEPTH and lines == [True, False, True]
    assert [dev.read(0x000, 1) for _ in range(FIFO_DEPTH)] == list(range(FIFO_DEPTH))
    assert lines[-1] is False and dev.read(0x03C, 4) == 0


def test_register_table_has_unique_word_offsets():
    offs = [r.offset for r in PL011_REGS]
    assert len(offs) == len(set(offs)) and all(o % 4 == 0 for o in offs)


def test_trace_events():
    sink = ListSink()
    dev = PL011(lambda b: None, tracer=Tracer("pl011_*", [sink]))
    dev.write(0x000, 0x41, 4)
    assert [r.event for r in sink.records] == ["pl011_write", "pl011_putchar"]
    assert sink.records[0]["reg"] == "UARTDR" and sink.records[1]["ch"] == 0x41


def test_the_source_is_pulled_only_once_the_guest_listens():
    dev, lines = make_irq()
    feed = bytearray(b"hi")
    asked = []

    def source(n):
        asked.append(n)
        out = bytes(feed[:n])
        del feed[:n]
        return out
    dev.source = source
    dev.read(0x018, 4)                                # a transmitting guest polls UARTFR: nothing is taken
    dev.poll()
    assert asked == [] and feed == b"hi"
    dev.write(0x038, INT_RX, 4)                       # RXIM: listening; one byte fits (no FIFO)
    assert asked == [1] and lines == [True] and dev.read(0x03C, 4) == INT_RX
    assert dev.read(0x000, 4) == ord("h")             # the read empties the FIFO, then pulls the next byte
    assert dev.read(0x018, 4) & (1 << 4) == 0 and dev.read(0x000, 4) == ord("i")
    assert dev.read(0x000, 4) == 0 and feed == b""


def test_changed_is_called_after_every_access_and_input():
    """`changed` (the harness's native console mirrors the transmit and flag state from it) after reads, writes
    and received input; the value read or written is the access's own."""
    dev = PL011(lambda b: None)
    seen = []
    dev.changed = lambda: seen.append((dev.regs["UARTCR"], len(dev.rx)))
    dev.write(0x030, 0x301, 4)
    assert dev.read(0x030, 2) == 0x301 and dev.receive(b"x") == 1
    assert seen == [(0x301, 0), (0x301, 0), (0x301, 1)]
