# A stand-in for Lightning's channel proxy surface, for chanload's tests.
#
# Lightning itself cannot be built here. This script reproduces what chanload
# relies on (shared/spec/lightning-target.md): the Lightning.* functions used
# to set up the benchmark channel (in-memory state), a :telemetry module with
# attach_many/4, detach/1, execute/3, span/3, list_handlers/1, and an HTTP
# endpoint serving /channels/:id/*path that streams to the channel's sink and
# emits the three spans. Run it as a real node:
#
#   elixir --sname lightning --cookie bench tests/standin/lightning.exs --port 0
#
# It prints "lightning stand-in listening on http://127.0.0.1:PORT".

defmodule :telemetry do
  @moduledoc false
  @table :telemetry_standin_handlers

  def init do
    parent = self()

    spawn(fn ->
      :ets.new(@table, [:set, :named_table, :public, read_concurrency: true])
      send(parent, :telemetry_ready)
      Process.sleep(:infinity)
    end)

    receive do
      :telemetry_ready -> :ok
    end
  end

  def attach(id, event, fun, config), do: attach_many(id, [event], fun, config)

  def attach_many(id, events, fun, config) when is_function(fun, 4) do
    if :ets.insert_new(@table, {id, events, fun, config}), do: :ok, else: {:error, :already_exists}
  end

  def detach(id) do
    case :ets.lookup(@table, id) do
      [] ->
        {:error, :not_found}

      _ ->
        :ets.delete(@table, id)
        :ok
    end
  end

  def list_handlers(prefix) do
    for {id, events, fun, config} <- :ets.tab2list(@table),
        event <- events,
        List.starts_with?(event, prefix) do
      %{id: id, event_name: event, function: fun, config: config}
    end
  end

  def execute(event, measurements, metadata) do
    for {id, events, fun, config} <- :ets.tab2list(@table), event in events do
      try do
        fun.(event, measurements, metadata, config)
      rescue
        _ -> detach(id)
      end
    end

    :ok
  end

  def span(prefix, start_metadata, fun) do
    start = System.monotonic_time()
    execute(prefix ++ [:start], %{system_time: System.system_time(), monotonic_time: start}, start_metadata)

    try do
      {result, stop_metadata} = fun.()
      stop = System.monotonic_time()
      execute(prefix ++ [:stop], %{duration: stop - start, monotonic_time: stop}, stop_metadata)
      result
    rescue
      e ->
        stop = System.monotonic_time()
        execute(prefix ++ [:exception], %{duration: stop - start}, Map.put(start_metadata, :reason, e))
        reraise e, __STACKTRACE__
    end
  end
end

defmodule Ecto.Changeset do
  @moduledoc false
  defstruct valid?: false, errors: [], changes: %{}, data: nil, action: :insert
end

defmodule Lightning.Accounts.User do
  @moduledoc false
  defstruct [:id, :first_name, :last_name, :email, :hashed_password, :inserted_at]
end

defmodule Lightning.Projects.Project do
  @moduledoc false
  defstruct [:id, :name, :description, project_users: [], inserted_at: nil]
end

defmodule Lightning.Channels.Channel do
  @moduledoc false
  defstruct [:id, :name, :sink_url, :project_id, enabled: true, lock_version: 0, inserted_at: nil]
end

defmodule Lightning.Store do
  @moduledoc false
  # Rows by schema: %{Channel => %{id => struct}, ...}
  def start do
    {:ok, _} = Agent.start(fn -> %{} end, name: __MODULE__)
    :ok
  end

  def all(schema), do: Agent.get(__MODULE__, &Map.values(Map.get(&1, schema, %{})))
  def get(schema, id), do: Agent.get(__MODULE__, &get_in(&1, [Access.key(schema, %{}), id]))

  def put(%schema{id: id} = row) do
    Agent.update(__MODULE__, &Map.update(&1, schema, %{id => row}, fn rows -> Map.put(rows, id, row) end))
    row
  end

  def uuid do
    <<a::32, b::16, c::16, d::16, e::48>> = :crypto.strong_rand_bytes(16)
    c = Bitwise.bor(Bitwise.band(c, 0x0FFF), 0x4000)
    d = Bitwise.bor(Bitwise.band(d, 0x3FFF), 0x8000)

    :io_lib.format("~8.16.0b-~4.16.0b-~4.16.0b-~4.16.0b-~12.16.0b", [a, b, c, d, e])
    |> IO.iodata_to_binary()
  end
end

defmodule Lightning.Repo do
  @moduledoc false
  def get_by(schema, clauses) do
    Enum.find(Lightning.Store.all(schema), fn row ->
      Enum.all?(clauses, fn {k, v} -> Map.get(row, k) == v end)
    end)
  end

  def get(schema, id), do: Lightning.Store.get(schema, id)
end

defmodule Lightning.Accounts do
  @moduledoc false
  alias Lightning.Accounts.User

  def register_user(attrs) do
    errors =
      []
      |> required(attrs, [:first_name, :email, :password])
      |> then(fn errs ->
        if Lightning.Repo.get_by(User, email: attrs[:email]),
          do: [{:email, {"has already been taken", []}} | errs],
          else: errs
      end)
      |> then(fn errs ->
        if is_binary(attrs[:password]) and byte_size(attrs[:password]) < 12,
          do: [{:password, {"should be at least %{count} character(s)", [count: 12]}} | errs],
          else: errs
      end)

    if errors == [] do
      user = %User{
        id: Lightning.Store.uuid(),
        first_name: attrs[:first_name],
        last_name: attrs[:last_name],
        email: attrs[:email],
        hashed_password: :crypto.hash(:sha256, attrs[:password]) |> Base.encode16()
      }

      {:ok, Lightning.Store.put(user)}
    else
      {:error, %Ecto.Changeset{errors: Enum.reverse(errors), changes: attrs}}
    end
  end

  defp required(errors, attrs, fields) do
    Enum.reduce(fields, errors, fn f, acc ->
      if attrs[f] in [nil, ""], do: [{f, {"can't be blank", [validation: :required]}} | acc], else: acc
    end)
  end
end

defmodule Lightning.Projects do
  @moduledoc false
  alias Lightning.Projects.Project

  def create_project(attrs, _schedule_deletion? \\ true) do
    cond do
      attrs[:name] in [nil, ""] ->
        {:error, %Ecto.Changeset{errors: [name: {"can't be blank", [validation: :required]}]}}

      Enum.any?(attrs[:project_users] || [], &(Lightning.Store.get(Lightning.Accounts.User, &1.user_id) == nil)) ->
        {:error, %Ecto.Changeset{errors: [project_users: {"user does not exist", []}]}}

      true ->
        {:ok, Lightning.Store.put(%Project{id: Lightning.Store.uuid(), name: attrs[:name], project_users: attrs[:project_users] || []})}
    end
  end
end

defmodule Lightning.Channels do
  @moduledoc false
  alias Lightning.Channels.Channel

  def create_channel(attrs) do
    errors =
      []
      |> check(attrs[:name] in [nil, ""], :name, "can't be blank")
      |> check(not valid_url?(attrs[:sink_url]), :sink_url, "must be a valid URL")
      |> check(Lightning.Store.get(Lightning.Projects.Project, attrs[:project_id]) == nil, :project_id, "does not exist")
      |> check(
        Lightning.Repo.get_by(Channel, name: attrs[:name], project_id: attrs[:project_id]) != nil,
        :name,
        "has already been taken"
      )

    if errors == [] do
      {:ok,
       Lightning.Store.put(%Channel{
         id: Lightning.Store.uuid(),
         name: attrs[:name],
         sink_url: attrs[:sink_url],
         project_id: attrs[:project_id],
         enabled: Map.get(attrs, :enabled, true)
       })}
    else
      {:error, %Ecto.Changeset{errors: Enum.reverse(errors), changes: attrs}}
    end
  end

  def update_channel(%Channel{} = channel, attrs) do
    updated = struct(channel, Map.take(attrs, [:name, :sink_url, :enabled]))

    if valid_url?(updated.sink_url) do
      {:ok, Lightning.Store.put(%{updated | lock_version: channel.lock_version + 1})}
    else
      {:error, %Ecto.Changeset{errors: [sink_url: {"must be a valid URL", []}]}}
    end
  end

  defp check(errors, true, field, message), do: [{field, {message, []}} | errors]
  defp check(errors, false, _field, _message), do: errors

  defp valid_url?(url) when is_binary(url) do
    case URI.parse(url) do
      %URI{scheme: s, host: h} when s in ["http", "https"] and is_binary(h) and h != "" -> true
      _ -> false
    end
  end

  defp valid_url?(_), do: false
end

defmodule Lightning.ChannelProxy do
  @moduledoc false
  # /channels/:id/*path: a streaming HTTP/1.1 proxy on :gen_tcp, emitting the
  # three telemetry spans Lightning emits.
  @prefix [:lightning, :channel_proxy]
  @chunk 65_536

  def listen(port) do
    {:ok, lsock} =
      :gen_tcp.listen(port, [:binary, packet: :raw, active: false, reuseaddr: true, ip: {127, 0, 0, 1}, backlog: 1024, nodelay: true])

    {:ok, port} = :inet.port(lsock)
    spawn(fn -> accept(lsock) end)
    port
  end

  defp accept(lsock) do
    {:ok, sock} = :gen_tcp.accept(lsock)
    pid = spawn(fn -> receive(do: (:go -> serve(sock, %{buffer: "", upstream: nil}))) end)
    :gen_tcp.controlling_process(sock, pid)
    send(pid, :go)
    accept(lsock)
  end

  defp serve(sock, state) do
    case read_head(sock, state.buffer) do
      {:ok, method, target, headers, rest} ->
        state = handle(sock, method, target, headers, %{state | buffer: rest})
        if state, do: serve(sock, state), else: :gen_tcp.close(sock)

      _ ->
        if state.upstream, do: :gen_tcp.close(state.upstream)
        :gen_tcp.close(sock)
    end
  end

  # Reads a request or response head with :erlang.decode_packet.
  def read_head(sock, buffer, type \\ :http_bin) do
    case :erlang.decode_packet(type, buffer, []) do
      {:ok, {:http_request, method, {:abs_path, target}, _v}, rest} ->
        read_headers(sock, rest, {to_string(method), target})

      {:ok, {:http_response, _v, status, _reason}, rest} ->
        read_headers(sock, rest, status)

      {:more, _} ->
        case :gen_tcp.recv(sock, 0) do
          {:ok, data} -> read_head(sock, buffer <> data, type)
          error -> error
        end

      {:ok, {:http_error, _}, _} ->
        {:error, :bad_request}

      {:error, _} = error ->
        error
    end
  end

  defp read_headers(sock, buffer, start, acc \\ []) do
    case :erlang.decode_packet(:httph_bin, buffer, []) do
      {:ok, {:http_header, _, name, _, value}, rest} ->
        read_headers(sock, rest, start, [{String.downcase(to_string(name)), value} | acc])

      {:ok, :http_eoh, rest} ->
        case start do
          {method, target} -> {:ok, method, target, Enum.reverse(acc), rest}
          status -> {:ok, status, Enum.reverse(acc), rest}
        end

      {:more, _} ->
        case :gen_tcp.recv(sock, 0) do
          {:ok, data} -> read_headers(sock, buffer <> data, start, acc)
          error -> error
        end

      _ ->
        {:error, :bad_header}
    end
  end

  defp handle(sock, method, target, headers, state) do
    {path, query} =
      case String.split(target, "?", parts: 2) do
        [p, q] -> {p, "?" <> q}
        [p] -> {p, ""}
      end

    case String.split(path, "/", parts: 4) do
      ["", "channels", id | rest] ->
        sub = Enum.at(rest, 0, "")

        :telemetry.span(@prefix ++ [:request], %{channel_id: id}, fn ->
          result = proxy(sock, method, id, sub, query, headers, state)
          {result, %{channel_id: id}}
        end)

      _ ->
        drain_body(sock, headers, state)
        reply(sock, 404, ~s({"error":"Not Found"}))
        state
    end
  end

  defp proxy(sock, method, id, sub, query, headers, state) do
    channel =
      :telemetry.span(@prefix ++ [:fetch_channel], %{channel_id: id}, fn ->
        found =
          case Lightning.Repo.get(Lightning.Channels.Channel, id) do
            %{enabled: true} = c -> c
            _ -> nil
          end

        {found, %{channel_id: id}}
      end)

    if channel == nil do
      state = drain_body(sock, headers, state)
      reply(sock, 404, ~s({"error":"Not Found"}))
      state
    else
      sink = URI.parse(channel.sink_url)
      base = String.trim_trailing(sink.path || "", "/")
      upstream_path = base <> "/" <> sub <> query

      :telemetry.span(@prefix ++ [:upstream], %{channel_id: id, sink_url: channel.sink_url, path: sub}, fn ->
        {forward(sock, method, sink, upstream_path, headers, state), %{channel_id: id}}
      end)
    end
  end

  defp forward(sock, method, sink, path, headers, state) do
    upstream =
      case state.upstream do
        nil ->
          case :gen_tcp.connect(String.to_charlist(sink.host), sink.port, [:binary, packet: :raw, active: false, nodelay: true]) do
            {:ok, u} -> u
            {:error, _} -> nil
          end

        u ->
          u
      end

    if upstream == nil do
      state = drain_body(sock, headers, state)
      reply(sock, 502, ~s({"error":"Bad Gateway"}))
      state
    else
      send_upstream(sock, upstream, method, sink, path, headers, state)
    end
  end

  defp send_upstream(sock, upstream, method, sink, path, headers, state) do
    {:ok, {peer, _}} = :inet.peername(sock)
    request_id = Base.encode16(:crypto.strong_rand_bytes(12), case: :lower)
    host = :proplists.get_value("host", headers, "")

    out_headers =
      headers
      |> Enum.reject(fn {k, _} -> k in ["x-request-id", "host", "connection"] end)
      |> Kernel.++([
        {"host", "#{sink.host}:#{sink.port}"},
        {"x-forwarded-for", :inet.ntoa(peer) |> to_string()},
        {"x-forwarded-host", host},
        {"x-forwarded-proto", "http"},
        {"x-request-id", request_id}
      ])

    head = [method, " ", path, " HTTP/1.1\r\n", Enum.map(out_headers, fn {k, v} -> [k, ": ", v, "\r\n"] end), "\r\n"]
    :ok = :gen_tcp.send(upstream, head)
    rest = stream_body(sock, upstream, headers, state.buffer)

    case read_head(upstream, "") do
      {:ok, status, resp_headers, resp_rest} ->
        keep = Enum.reject(resp_headers, fn {k, _} -> k in ["connection", "keep-alive"] end)
        :ok = :gen_tcp.send(sock, ["HTTP/1.1 ", Integer.to_string(status), " OK\r\n", Enum.map(keep, fn {k, v} -> [k, ": ", v, "\r\n"] end), "\r\n"])
        leftover = stream_body(upstream, sock, resp_headers, resp_rest)
        if leftover != "", do: :gen_tcp.close(upstream)
        %{state | buffer: rest, upstream: if(leftover == "", do: upstream, else: nil)}

      _ ->
        :gen_tcp.close(upstream)
        reply(sock, 502, ~s({"error":"Bad Gateway"}))
        %{state | buffer: rest, upstream: nil}
    end
  end

  # Copies a message body from `from` to `to` as it arrives (Content-Length or
  # chunked, passed through as is); returns bytes read past its end.
  def stream_body(from, to, headers, buffer) do
    cond do
      (len = :proplists.get_value("content-length", headers)) != :undefined ->
        copy_length(from, to, String.to_integer(len), buffer)

      String.downcase(:proplists.get_value("transfer-encoding", headers, "")) == "chunked" ->
        copy_chunked(from, to, buffer)

      true ->
        buffer
    end
  end

  defp copy_length(_from, _to, 0, buffer), do: buffer

  defp copy_length(from, to, left, buffer) when byte_size(buffer) > 0 do
    take = min(left, byte_size(buffer))
    <<part::binary-size(take), rest::binary>> = buffer
    :ok = :gen_tcp.send(to, part)
    copy_length(from, to, left - take, rest)
  end

  defp copy_length(from, to, left, "") do
    {:ok, data} = :gen_tcp.recv(from, 0)
    copy_length(from, to, left, data)
  end

  defp copy_chunked(from, to, buffer) do
    case :binary.split(buffer, "\r\n") do
      [size_line, rest] ->
        {size, _} = Integer.parse(hd(String.split(size_line, ";")), 16)
        :ok = :gen_tcp.send(to, [size_line, "\r\n"])

        if size == 0 do
          copy_trailers(from, to, rest)
        else
          rest = copy_length(from, to, size + 2, rest)
          copy_chunked(from, to, rest)
        end

      [_partial] ->
        {:ok, data} = :gen_tcp.recv(from, 0)
        copy_chunked(from, to, buffer <> data)
    end
  end

  defp copy_trailers(from, to, buffer) do
    case :binary.split(buffer, "\r\n") do
      ["", rest] ->
        :ok = :gen_tcp.send(to, "\r\n")
        rest

      [line, rest] ->
        :ok = :gen_tcp.send(to, [line, "\r\n"])
        copy_trailers(from, to, rest)

      [_] ->
        {:ok, data} = :gen_tcp.recv(from, 0)
        copy_trailers(from, to, buffer <> data)
    end
  end

  defp drain_body(sock, headers, state) do
    %{state | buffer: discard(sock, headers, state.buffer)}
  end

  defp discard(sock, headers, buffer) do
    case :proplists.get_value("content-length", headers) do
      :undefined -> buffer
      len -> skip(sock, String.to_integer(len), buffer)
    end
  end

  defp skip(_sock, 0, buffer), do: buffer

  defp skip(_sock, left, buffer) when byte_size(buffer) >= left do
    <<_::binary-size(left), rest::binary>> = buffer
    rest
  end

  defp skip(sock, left, buffer) do
    {:ok, data} = :gen_tcp.recv(sock, 0)
    skip(sock, left - byte_size(buffer), data)
  end

  defp reply(sock, status, body) do
    :gen_tcp.send(sock, [
      "HTTP/1.1 ", Integer.to_string(status), " X\r\ncontent-type: application/json\r\ncontent-length: ",
      Integer.to_string(byte_size(body)), "\r\n\r\n", body
    ])
  end
end

{opts, _, _} = OptionParser.parse(System.argv(), strict: [port: :integer])
:telemetry.init()
:ok = Lightning.Store.start()
port = Lightning.ChannelProxy.listen(Keyword.get(opts, :port, 4000))
IO.puts("lightning stand-in listening on http://127.0.0.1:#{port} as #{node()}")
Process.sleep(:infinity)
