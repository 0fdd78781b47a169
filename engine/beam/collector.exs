# chanload's telemetry collector, deployed onto the Lightning node with
# Code.eval_string/1 and removed again when the run ends.
#
# It attaches one handler to the [:lightning, :channel_proxy, *, :stop]
# events. Handlers run in the connection processes and bump counters in a
# public ETS table (write_concurrency), so nothing serialises the proxy and
# memory stays bounded: durations are counted per bucket of 3 significant
# digits (exact below 1 ms), never kept one by one.
#
# RUNID is replaced by a per-run id before the source is sent, so the
# module, table, owner and handler of two runs against one node never meet:
# one run's teardown cannot remove the other's collector.
#
# Today's Lightning (lib/lightning_web/plugs/channel_proxy_plug.ex) wraps the
# whole plug call in :inbound, whose stop metadata says whether a channel was
# resolved (outcome: :resolved) or the request was answered 404 without one
# (:invalid_uuid, :unknown_channel). Resolved ones are timed as "inbound";
# the others are only counted, by outcome, so they are shown, not lost.

defmodule Chanload.TelemetryCollector.RRUNID do
  @moduledoc false
  @table :chanload_telemetry_RUNID
  @owner :chanload_telemetry_owner_RUNID
  @handler "chanload-telemetry-RUNID"

  # Start (or restart) the collector; returns :ok.
  def start(events) do
    stop()
    parent = self()

    owner =
      spawn(fn ->
        :ets.new(@table, [:set, :named_table, :public, write_concurrency: true])
        send(parent, {:chanload_collector_ready, self()})

        receive do
          :stop -> :ok
        end
      end)

    receive do
      {:chanload_collector_ready, ^owner} -> :ok
    after
      5_000 -> exit(:collector_table_timeout)
    end

    Process.register(owner, @owner)
    stop_events = Enum.map(events, &(&1 ++ [:stop]))
    :telemetry.attach_many(@handler, stop_events, &__MODULE__.handle_event/4, nil)
  end

  def handle_event([_, _, :inbound, :stop], _measurements, %{outcome: outcome}, _config)
      when outcome != :resolved do
    try do
      :ets.update_counter(@table, {:unresolved, outcome}, {2, 1}, {{:unresolved, outcome}, 0})
    rescue
      ArgumentError -> :ok
    end

    :ok
  end

  def handle_event(event, %{duration: duration}, _metadata, _config) do
    us = System.convert_time_unit(duration, :native, :microsecond)
    key = Enum.at(event, -2)
    bucket = bucket(us)

    try do
      :ets.update_counter(@table, {key, bucket}, {2, 1}, {{key, bucket}, 0})
      :ets.update_counter(@table, {key, :count}, {2, 1}, {{key, :count}, 0})
      :ets.update_counter(@table, {key, :sum}, {2, us}, {{key, :sum}, 0})
    rescue
      ArgumentError -> :ok
    end

    :ok
  end

  def handle_event(_event, _measurements, _metadata, _config), do: :ok

  # Below 1 ms, exact; above, 3 significant digits (rounded down).
  def bucket(us) when us < 1_000, do: max(us, 0)

  def bucket(us) do
    scale = Integer.pow(10, length(Integer.digits(us)) - 3)
    div(us, scale) * scale
  end

  # %{events: %{event => %{count: n, sum: us, buckets: [{lower_bound_us, n}, ...]}},
  #   unresolved: %{outcome => n}}
  def summary do
    rows = if :ets.info(@table) == :undefined, do: [], else: :ets.tab2list(@table)
    {unresolved, timed} = Enum.split_with(rows, &match?({{:unresolved, _}, _}, &1))
    %{events: events(timed), unresolved: Map.new(unresolved, fn {{_, o}, n} -> {o, n} end)}
  end

  defp events(rows) do
    Enum.reduce(rows, %{}, fn
      {{key, :count}, n}, acc ->
        Map.update(acc, key, %{count: n, sum: 0, buckets: []}, &%{&1 | count: n})

      {{key, :sum}, n}, acc ->
        Map.update(acc, key, %{count: 0, sum: n, buckets: []}, &%{&1 | sum: n})

      {{key, bucket}, n}, acc ->
        Map.update(
          acc,
          key,
          %{count: 0, sum: 0, buckets: [{bucket, n}]},
          &%{&1 | buckets: [{bucket, n} | &1.buckets]}
        )
    end)
  end

  def reset do
    if :ets.info(@table) != :undefined, do: :ets.delete_all_objects(@table)
    :ok
  end

  # Detach the handler, drop the table, end the owner. Safe to call twice.
  def stop do
    :telemetry.detach(@handler)

    case Process.whereis(@owner) do
      nil -> :ok
      pid -> send(pid, :stop)
    end

    wait_gone(50)
  end

  defp wait_gone(0), do: :ok

  defp wait_gone(n) do
    if :ets.info(@table) == :undefined and Process.whereis(@owner) == nil do
      :ok
    else
      Process.sleep(10)
      wait_gone(n - 1)
    end
  end

  # What is left of us on the node (for tests and for a final check).
  def leftovers do
    handlers =
      :telemetry.list_handlers([:lightning, :channel_proxy])
      |> Enum.filter(&(&1.id == @handler))

    %{
      table: :ets.info(@table) != :undefined,
      owner: Process.whereis(@owner) != nil,
      handlers: length(handlers)
    }
  end
end
