# The "today" profile of the Lightning stand-in, part 2: the HTTP side.
#
#   LightningWeb.Endpoint        accept loop, HTTP/1.1 on :gen_tcp, Plug.RequestId
#   LightningWeb.ChannelProxyPlug  lib/lightning_web/plugs/channel_proxy_plug.ex
#   LightningWeb.Auth            lib/lightning_web/auth.ex
#   Lightning.Channels.Handler   lib/lightning/channels/handler.ex
#   Philter, Philter.Egress, Philter.Config   OpenFn/philter lib/philter.ex,
#                                lib/philter/egress.ex, lib/philter/config.ex
#
# Bodies are streamed piece by piece in both directions (never held whole):
# the request body goes upstream as it arrives, every piece of the upstream
# response becomes one chunk to the client, as Philter does.

defmodule Lightning.StandIn.ClientClosed do
  # The client connection failed mid-request; the connection process stops.
  defexception [:reason]
  def message(e), do: "client connection: #{inspect(e.reason)}"
end

defmodule Mint.TransportError do
  # The shape of Mint's transport errors, which Philter hands to the handler.
  defexception [:reason]
  def message(e), do: inspect(e.reason)
end

defmodule Lightning.StandIn.Conn do
  @moduledoc false
  # The parts of a Plug.Conn the proxy uses, plus the socket and what has
  # been read past the request head.
  defstruct [
    :sock,
    :method,
    :request_path,
    :query_string,
    :host,
    :remote_ip,
    path_info: [],
    req_headers: [],
    resp_headers: [],
    buffer: "",
    body: :unread,
    status: nil,
    state: :unset,
    keep_alive: true,
    continue_sent: false
  ]
end

defmodule Lightning.StandIn.HTTP do
  @moduledoc false
  # HTTP/1.1 on :gen_tcp: heads via :erlang.decode_packet, bodies streamed
  # (Content-Length, chunked, or until close) to a callback, responses as
  # Cowboy writes them.
  alias Lightning.StandIn.{ClientClosed, Conn}

  @max_head 65_536

  # -> {:ok, method, target, version, headers, rest} | {:error, reason}
  def read_request(sock, buffer) do
    read_start(sock, trim_leading_crlf(buffer), :infinity)
  end

  # -> {:ok, status, headers, rest} | {:error, reason}
  def read_response(sock, buffer, timeout), do: read_start(sock, buffer, timeout)

  defp trim_leading_crlf(<<"\r\n", rest::binary>>), do: trim_leading_crlf(rest)
  defp trim_leading_crlf(buffer), do: buffer

  defp read_start(sock, buffer, timeout) do
    case :erlang.decode_packet(:http_bin, buffer, []) do
      {:ok, {:http_request, method, {:abs_path, target}, version}, rest} ->
        read_headers(sock, rest, {:request, to_string(method), target, version}, [], timeout)

      {:ok, {:http_request, _, _, _}, _} ->
        {:error, :unsupported_target}

      {:ok, {:http_response, _version, status, _reason}, rest} ->
        read_headers(sock, rest, {:response, status}, [], timeout)

      {:more, _} when byte_size(buffer) > @max_head ->
        {:error, :head_too_large}

      {:more, _} ->
        with {:ok, data} <- :gen_tcp.recv(sock, 0, timeout), do: read_start(sock, buffer <> data, timeout)

      {:ok, {:http_error, _}, _} ->
        {:error, :bad_request}

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp read_headers(sock, buffer, start, acc, timeout) do
    case :erlang.decode_packet(:httph_bin, buffer, []) do
      {:ok, {:http_header, _, name, _, value}, rest} ->
        read_headers(sock, rest, start, [{String.downcase(to_string(name)), value} | acc], timeout)

      {:ok, :http_eoh, rest} ->
        case start do
          {:request, method, target, version} -> {:ok, method, target, version, Enum.reverse(acc), rest}
          {:response, status} -> {:ok, status, Enum.reverse(acc), rest}
        end

      {:more, _} when byte_size(buffer) > @max_head ->
        {:error, :head_too_large}

      {:more, _} ->
        with {:ok, data} <- :gen_tcp.recv(sock, 0, timeout),
             do: read_headers(sock, buffer <> data, start, acc, timeout)

      _ ->
        {:error, :bad_header}
    end
  end

  def header(headers, name) do
    case List.keyfind(headers, name, 0) do
      {_, v} -> v
      nil -> nil
    end
  end

  # How a message body is framed: {:length, n} | :chunked | :close | :none.
  def framing(headers, kind) do
    te = header(headers, "transfer-encoding")
    cl = header(headers, "content-length")

    cond do
      te && te |> String.downcase() |> String.split(",") |> List.last() |> String.trim() == "chunked" -> :chunked
      cl != nil -> parse_length(cl)
      kind == :response -> :close
      true -> :none
    end
  end

  defp parse_length(value) do
    case Integer.parse(String.trim(value)) do
      {n, ""} when n >= 0 -> {:length, n}
      _ -> {:error, :bad_content_length}
    end
  end

  # Streams a body from sock to fun.(piece, acc) -> {:cont, acc} | {:halt, acc}.
  # -> {:done, rest, acc} | {:halted, acc} | {:error, reason, acc}
  def stream_body(sock, framing, buffer, timeout, fun, acc) do
    case framing do
      :none -> {:done, buffer, acc}
      {:length, n} -> stream_length(sock, n, buffer, timeout, fun, acc)
      :chunked -> stream_chunked(sock, buffer, timeout, fun, acc)
      :close -> stream_until_close(sock, buffer, timeout, fun, acc)
      {:error, reason} -> {:error, reason, acc}
    end
  end

  defp stream_length(_sock, 0, buffer, _t, _fun, acc), do: {:done, buffer, acc}

  defp stream_length(sock, left, "", t, fun, acc) do
    case :gen_tcp.recv(sock, 0, t) do
      {:ok, data} -> stream_length(sock, left, data, t, fun, acc)
      {:error, reason} -> {:error, reason, acc}
    end
  end

  defp stream_length(sock, left, buffer, t, fun, acc) do
    take = min(left, byte_size(buffer))
    <<piece::binary-size(take), rest::binary>> = buffer

    case fun.(piece, acc) do
      {:cont, acc} -> stream_length(sock, left - take, rest, t, fun, acc)
      {:halt, acc} -> {:halted, acc}
    end
  end

  defp stream_until_close(sock, buffer, t, fun, acc) do
    acc =
      if buffer == "" do
        acc
      else
        case fun.(buffer, acc) do
          {:cont, acc} -> acc
          {:halt, acc} -> throw({:halted, acc})
        end
      end

    case :gen_tcp.recv(sock, 0, t) do
      {:ok, data} -> stream_until_close(sock, data, t, fun, acc)
      {:error, :closed} -> {:done, "", acc}
      {:error, reason} -> {:error, reason, acc}
    end
  catch
    {:halted, acc} -> {:halted, acc}
  end

  # Chunked: every part of a chunk's data is handed on as soon as it is read
  # (a 1 MiB chunk is never held whole); trailers are read and dropped.
  defp stream_chunked(sock, buffer, t, fun, acc) do
    case :binary.split(buffer, "\r\n") do
      [line, rest] ->
        case line |> String.split(";") |> hd() |> String.trim() |> Integer.parse(16) do
          {0, ""} -> trailers(sock, rest, t, acc)
          {size, ""} when size > 0 -> chunk_data(sock, size, rest, t, fun, acc)
          _ -> {:error, :bad_chunk, acc}
        end

      [_] when byte_size(buffer) > 4096 ->
        {:error, :bad_chunk, acc}

      [_] ->
        case :gen_tcp.recv(sock, 0, t) do
          {:ok, data} -> stream_chunked(sock, buffer <> data, t, fun, acc)
          {:error, reason} -> {:error, reason, acc}
        end
    end
  end

  defp chunk_data(sock, 0, buffer, t, fun, acc) do
    case buffer do
      <<"\r\n", rest::binary>> ->
        stream_chunked(sock, rest, t, fun, acc)

      _ when byte_size(buffer) < 2 ->
        case :gen_tcp.recv(sock, 0, t) do
          {:ok, data} -> chunk_data(sock, 0, buffer <> data, t, fun, acc)
          {:error, reason} -> {:error, reason, acc}
        end

      _ ->
        {:error, :bad_chunk, acc}
    end
  end

  defp chunk_data(sock, left, "", t, fun, acc) do
    case :gen_tcp.recv(sock, 0, t) do
      {:ok, data} -> chunk_data(sock, left, data, t, fun, acc)
      {:error, reason} -> {:error, reason, acc}
    end
  end

  defp chunk_data(sock, left, buffer, t, fun, acc) do
    take = min(left, byte_size(buffer))
    <<piece::binary-size(take), rest::binary>> = buffer

    case fun.(piece, acc) do
      {:cont, acc} -> chunk_data(sock, left - take, rest, t, fun, acc)
      {:halt, acc} -> {:halted, acc}
    end
  end

  defp trailers(sock, buffer, t, acc) do
    case :binary.split(buffer, "\r\n") do
      ["", rest] ->
        {:done, rest, acc}

      [_line, rest] ->
        trailers(sock, rest, t, acc)

      [_] ->
        case :gen_tcp.recv(sock, 0, t) do
          {:ok, data} -> trailers(sock, buffer <> data, t, acc)
          {:error, reason} -> {:error, reason, acc}
        end
    end
  end

  # --- the request body, read through the conn ---

  # Reads the request body into fun (as Plug's read_body/2 would, sending
  # "100 Continue" first when the client asked for it).
  def read_body(%Conn{body: :unread} = conn, fun, acc) do
    conn = maybe_continue(conn)

    case stream_body(conn.sock, framing(conn.req_headers, :request), conn.buffer, :infinity, fun, acc) do
      {:done, rest, acc} -> {%{conn | buffer: rest, body: :read}, acc}
      {:halted, acc} -> {%{conn | buffer: "", body: :partial, keep_alive: false}, acc}
      {:error, reason, _acc} -> raise ClientClosed, reason: reason
    end
  end

  def read_body(conn, _fun, acc), do: {conn, acc}

  defp maybe_continue(%Conn{continue_sent: false} = conn) do
    if expects_continue?(conn) and framing(conn.req_headers, :request) != :none do
      :gen_tcp.send(conn.sock, "HTTP/1.1 100 Continue\r\n\r\n")
      %{conn | continue_sent: true}
    else
      conn
    end
  end

  defp maybe_continue(conn), do: conn

  defp expects_continue?(conn) do
    case header(conn.req_headers, "expect") do
      nil -> false
      v -> String.downcase(v) == "100-continue"
    end
  end

  # Before answering without having read the body: read and drop it, so the
  # connection can carry the next request (a client waiting for
  # "100 Continue" is not asked for it; that connection closes instead).
  def discard_body(%Conn{body: :unread} = conn) do
    if expects_continue?(conn) and framing(conn.req_headers, :request) != :none do
      %{conn | body: :partial, keep_alive: false}
    else
      {conn, _} = read_body(conn, fn _piece, acc -> {:cont, acc} end, nil)
      conn
    end
  end

  def discard_body(conn), do: conn

  # --- responses ---

  def get_req_header(%Conn{req_headers: headers}, name), do: for({^name, v} <- headers, do: v)

  def get_resp_header(%Conn{resp_headers: headers}, name), do: for({^name, v} <- headers, do: v)

  def put_resp_header(%Conn{} = conn, name, value),
    do: %{conn | resp_headers: List.keystore(conn.resp_headers, name, 0, {name, value})}

  # A whole response with content-length (Plug's send_resp/3).
  def send_resp(%Conn{} = conn, status, content_type, body) do
    conn = discard_body(conn)

    headers =
      conn.resp_headers ++
        [{"content-type", content_type}, {"content-length", Integer.to_string(IO.iodata_length(body))}] ++
        connection_header(conn)

    _ = :gen_tcp.send(conn.sock, [head(status, headers), body])
    %{conn | status: status, state: :sent}
  end

  # The head of a chunked response (Plug's send_chunked/2); 204 and 304
  # carry no body and no transfer-encoding, a HEAD response no body.
  def send_chunked(%Conn{} = conn, status) do
    no_body = status in [204, 304] or conn.method == "HEAD"
    te = if status in [204, 304], do: [], else: [{"transfer-encoding", "chunked"}]
    headers = conn.resp_headers ++ te ++ connection_header(conn)

    case :gen_tcp.send(conn.sock, head(status, headers)) do
      :ok -> {:ok, %{conn | status: status, state: if(no_body, do: :sent, else: :chunked)}}
      {:error, reason} -> {:error, reason, %{conn | status: status, state: :sent, keep_alive: false}}
    end
  end

  # One chunk (Plug's chunk/2); an empty piece sends nothing.
  def chunk(%Conn{state: :chunked} = conn, ""), do: {:ok, conn}

  def chunk(%Conn{state: :chunked} = conn, data) do
    case :gen_tcp.send(conn.sock, [Integer.to_string(byte_size(data), 16), "\r\n", data, "\r\n"]) do
      :ok -> {:ok, conn}
      {:error, reason} -> {:error, reason}
    end
  end

  def chunk(conn, _data), do: {:ok, conn}

  def finish_chunked(%Conn{state: :chunked} = conn) do
    case :gen_tcp.send(conn.sock, "0\r\n\r\n") do
      :ok -> %{conn | state: :sent}
      {:error, _} -> %{conn | state: :sent, keep_alive: false}
    end
  end

  def finish_chunked(conn), do: conn

  defp connection_header(%Conn{keep_alive: false}), do: [{"connection", "close"}]
  defp connection_header(_conn), do: []

  def head(status, headers) do
    ["HTTP/1.1 ", Integer.to_string(status), " ", reason(status), "\r\n", Enum.map(headers, fn {k, v} -> [k, ": ", v, "\r\n"] end), "\r\n"]
  end

  @reasons %{
    200 => "OK",
    201 => "Created",
    202 => "Accepted",
    204 => "No Content",
    301 => "Moved Permanently",
    302 => "Found",
    304 => "Not Modified",
    400 => "Bad Request",
    401 => "Unauthorized",
    403 => "Forbidden",
    404 => "Not Found",
    405 => "Method Not Allowed",
    408 => "Request Timeout",
    413 => "Content Too Large",
    429 => "Too Many Requests",
    500 => "Internal Server Error",
    502 => "Bad Gateway",
    503 => "Service Unavailable",
    504 => "Gateway Timeout"
  }
  defp reason(status), do: Map.get(@reasons, status, "Status")
end

defmodule Philter.Config do
  @moduledoc false
  # OpenFn/philter lib/philter/config.ex: defaults and per-request overrides.
  # block_private_networks and allowed_hosts come from Lightning's runtime
  # config (CHANNEL_BLOCK_PRIVATE_NETWORKS, CHANNEL_ALLOWED_HOSTS), read once
  # at start by load_from_env!/0.
  @defaults %{
    receive_timeout: 15_000,
    connect_timeout: 5_000,
    dns_timeout: 5_000,
    max_payload_size: 1_048_576,
    block_private_networks: true,
    allowed_hosts: []
  }

  # lib/philter/config.ex: resolve/1
  def resolve(opts \\ []) do
    app = :persistent_term.get({__MODULE__, :app}, %{})

    for {key, default} <- @defaults, into: %{} do
      {key, Keyword.get_lazy(opts, key, fn -> Map.get(app, key, default) end)}
    end
  end

  # Lightning's config/runtime.exs for :philter (stand-in: from the environment)
  def load_from_env! do
    block =
      case System.get_env("CHANNEL_BLOCK_PRIVATE_NETWORKS") do
        nil ->
          true

        value ->
          case String.downcase(String.trim(value)) do
            v when v in ["true", "yes"] -> true
            v when v in ["false", "no"] -> false
            other -> raise ArgumentError, "CHANNEL_BLOCK_PRIVATE_NETWORKS must be true/yes/false/no, got #{inspect(other)}"
          end
      end

    hosts =
      System.get_env("CHANNEL_ALLOWED_HOSTS", "")
      |> String.split(",")
      |> Enum.map(&(&1 |> String.trim() |> String.downcase() |> String.replace_suffix(".", "")))
      |> Enum.reject(&(&1 == ""))

    :persistent_term.put({__MODULE__, :app}, %{block_private_networks: block, allowed_hosts: hosts})
    %{block_private_networks: block, allowed_hosts: hosts}
  end
end

defmodule Philter.Egress do
  @moduledoc false
  # OpenFn/philter lib/philter/egress.ex: resolve the upstream host (both
  # families, a failing family ignored) and refuse it when any address is
  # internal, unless the block is off or the host is allow-listed.
  import Bitwise

  @v4_blocked [
    {{0, 0, 0, 0}, 8},
    {{10, 0, 0, 0}, 8},
    {{100, 64, 0, 0}, 10},
    {{127, 0, 0, 0}, 8},
    {{169, 254, 0, 0}, 16},
    {{172, 16, 0, 0}, 12},
    {{192, 168, 0, 0}, 16},
    {{240, 0, 0, 0}, 4}
  ]

  # lib/philter/egress.ex: resolve_and_validate/2
  # -> {:ok, [ip]} | {:error, :no_addresses | :dns_timeout | {:blocked, ip}}
  def resolve_and_validate(host, opts) do
    with {:ok, addrs} <- resolve(host, Keyword.get(opts, :dns_timeout, 5_000)) do
      cond do
        normalise(host) in Enum.map(Keyword.get(opts, :allowed_hosts, []), &normalise/1) -> {:ok, addrs}
        Keyword.get(opts, :block_private_networks, true) -> check(addrs)
        true -> {:ok, addrs}
      end
    end
  end

  defp resolve(host, timeout) do
    task =
      Task.async(fn ->
        name = String.to_charlist(host)

        case Enum.flat_map([:inet, :inet6], &getaddrs(name, &1)) do
          [] -> {:error, :no_addresses}
          addrs -> {:ok, addrs}
        end
      end)

    case Task.yield(task, timeout) || Task.shutdown(task, :brutal_kill) do
      {:ok, result} -> result
      {:exit, _} -> {:error, :no_addresses}
      nil -> {:error, :dns_timeout}
    end
  end

  defp getaddrs(name, family) do
    case :inet.getaddrs(name, family) do
      {:ok, addrs} -> addrs
      {:error, _} -> []
    end
  end

  defp check(addrs) do
    case Enum.find(addrs, &blocked?/1) do
      nil -> {:ok, addrs}
      ip -> {:error, {:blocked, ip}}
    end
  end

  defp normalise(host), do: host |> String.downcase() |> String.replace_suffix(".", "")

  # lib/philter/egress.ex: blocked?/1 (IPv4-mapped, NAT64 and IPv4-compatible
  # IPv6 forms are checked as the IPv4 address they carry)
  def blocked?({0, 0, 0, 0, 0, 0xFFFF, g, h}), do: v4_blocked?(v4(g, h))
  def blocked?({0x64, 0xFF9B, 0, 0, 0, 0, g, h}), do: v4_blocked?(v4(g, h))
  def blocked?({0, 0, 0, 0, 0, 0, 0, 0}), do: true
  def blocked?({0, 0, 0, 0, 0, 0, 0, 1}), do: true
  def blocked?({0, 0, 0, 0, 0, 0, g, h}), do: v4_blocked?(v4(g, h))
  def blocked?({first, _, _, _, _, _, _, _}), do: (first &&& 0xFE00) == 0xFC00 or (first &&& 0xFFC0) == 0xFE80
  def blocked?({_, _, _, _} = ip), do: v4_blocked?(ip)

  defp v4(g, h), do: {g >>> 8, g &&& 0xFF, h >>> 8, h &&& 0xFF}

  defp v4_blocked?(ip) do
    n = v4_int(ip)

    Enum.any?(@v4_blocked, fn {net, prefix} ->
      mask = 0xFFFFFFFF <<< (32 - prefix) &&& 0xFFFFFFFF
      (n &&& mask) == (v4_int(net) &&& mask)
    end)
  end

  defp v4_int({a, b, c, d}), do: a <<< 24 ||| b <<< 16 ||| c <<< 8 ||| d
end

defmodule Philter do
  @moduledoc false
  # OpenFn/philter lib/philter.ex: proxy/2 with its Mint transport
  # (lib/philter/transport.ex) replaced by :gen_tcp: a new upstream
  # connection per request, closed after the response; the response
  # re-framed as chunked; request and response bodies SHA-256-hashed and
  # sized as they stream (no preview and no accumulation here).
  alias Lightning.StandIn.HTTP

  @hop_by_hop ~w(te transfer-encoding trailer connection keep-alive proxy-authenticate proxy-authorization upgrade)

  # lib/philter.ex: proxy/2 (options upstream, path, handler, strip_headers,
  # extra_headers, collect_timing)
  def proxy(conn, opts) do
    upstream = Keyword.fetch!(opts, :upstream)
    upstream_uri = URI.parse(upstream)
    config = Philter.Config.resolve(opts)
    {handler, handler_args} = Keyword.fetch!(opts, :handler)
    started_at = System.monotonic_time(:microsecond)
    path = Keyword.get(opts, :path, conn.request_path)
    upstream_url = upstream <> path <> if(conn.query_string == "", do: "", else: "?" <> conn.query_string)

    outbound_headers =
      build_outbound_headers(conn, upstream_uri, Keyword.get(opts, :strip_headers, []), Keyword.get(opts, :extra_headers, []))

    started =
      handler.handle_request_started(
        %{
          upstream_url: upstream_url,
          method: conn.method,
          headers: outbound_headers,
          content_type: HTTP.header(conn.req_headers, "content-type"),
          started_at: started_at
        },
        handler_args
      )

    case started do
      {:ok, handler_state} ->
        ctx = %{
          conn: conn,
          config: config,
          handler: handler,
          handler_state: handler_state,
          upstream_uri: upstream_uri,
          upstream_url: upstream_url,
          outbound_headers: outbound_headers,
          started_at: started_at
        }

        with :ok <- validate_upstream(upstream_uri),
             {:ok, addrs} <-
               Philter.Egress.resolve_and_validate(upstream_uri.host,
                 block_private_networks: config.block_private_networks,
                 allowed_hosts: config.allowed_hosts,
                 dns_timeout: config.dns_timeout
               ) do
          stream_upstream(ctx, addrs)
        else
          {:error, reason} -> egress_reject(ctx, reason)
        end

      {:reject, status, body, _state} ->
        HTTP.send_resp(conn, status, "text/plain; charset=utf-8", body)
    end
  end

  # client headers minus hop-by-hop, host rewritten, strip, then extra
  # (replacing headers of the same name)
  defp build_outbound_headers(conn, uri, strip, extra) do
    remove = MapSet.new(Enum.map(strip, &String.downcase/1) ++ Enum.map(extra, fn {k, _} -> String.downcase(k) end))

    conn.req_headers
    |> Enum.reject(fn {k, _} -> k in @hop_by_hop or k == "host" end)
    |> Kernel.++([{"host", host_header(uri)}])
    |> Enum.reject(fn {k, _} -> MapSet.member?(remove, k) end)
    |> Kernel.++(extra)
  end

  defp host_header(%URI{host: host, port: port}) when port in [nil, 80, 443], do: host || ""
  defp host_header(%URI{host: host, port: port}), do: "#{host}:#{port}"

  defp validate_upstream(%URI{host: host}) when host in [nil, ""], do: {:error, :invalid_host}
  defp validate_upstream(%URI{scheme: "http"}), do: :ok
  defp validate_upstream(%URI{scheme: "https"}), do: {:error, :unsupported_scheme_in_standin}
  defp validate_upstream(_uri), do: {:error, :unsupported_scheme}

  defp egress_reject(ctx, reason) do
    {status, body} =
      case reason do
        {:blocked, _ip} -> {403, "Request blocked by egress policy"}
        :dns_timeout -> {504, "Gateway Timeout"}
        _ -> {502, "Bad Gateway"}
      end

    finished(ctx, ctx.handler_state, %{error: reason, status: nil, timing: timing(ctx, nil, nil, nil)}, empty_obs(), empty_obs())
    HTTP.send_resp(ctx.conn, status, "text/plain; charset=utf-8", body)
  end

  defp stream_upstream(ctx, addrs) do
    connect_start = now()

    case connect(addrs, ctx.upstream_uri.port || 80, ctx.config.connect_timeout) do
      {:ok, up} ->
        connect_us = now() - connect_start

        try do
          exchange(ctx, up, connect_us)
        after
          :gen_tcp.close(up)
        end

      {:error, reason} ->
        error = %Mint.TransportError{reason: reason}
        gateway_error(ctx, ctx.conn, ctx.handler_state, error, timing(ctx, now() - connect_start, nil, nil), empty_obs())
    end
  end

  defp connect([], _port, _timeout), do: {:error, :nxdomain}

  defp connect([ip | rest], port, timeout) do
    family = if tuple_size(ip) == 8, do: [:inet6], else: []
    opts = family ++ [:binary, packet: :raw, active: false, nodelay: true]

    case :gen_tcp.connect(ip, port, opts, timeout) do
      {:ok, sock} -> {:ok, sock}
      {:error, reason} when rest == [] -> {:error, reason}
      {:error, _} -> connect(rest, port, timeout)
    end
  end

  defp exchange(ctx, up, connect_us) do
    conn = ctx.conn
    uri = URI.parse(ctx.upstream_url)
    target = (uri.path || "/") <> if(uri.query, do: "?" <> uri.query, else: "")
    req_framing = HTTP.framing(conn.req_headers, :request)

    # a streamed body without content-length goes chunked, as Mint sends it
    {headers, chunked_out?} =
      case req_framing do
        :chunked -> {ctx.outbound_headers ++ [{"transfer-encoding", "chunked"}], true}
        _ -> {ctx.outbound_headers, false}
      end

    send_start = now()

    case :gen_tcp.send(up, [conn.method, " ", target, " HTTP/1.1\r\n", Enum.map(headers, fn {k, v} -> [k, ": ", v, "\r\n"] end), "\r\n"]) do
      :ok ->
        {conn, req_obs, early} = send_request_body(conn, up, req_framing, chunked_out?)
        send_us = now() - send_start
        receive_response(%{ctx | conn: conn}, up, early, req_obs, connect_us, send_us)

      {:error, reason} ->
        gateway_error(ctx, conn, ctx.handler_state, %Mint.TransportError{reason: reason}, timing(ctx, connect_us, nil, nil), empty_obs())
    end
  end

  # Sends the request body upstream piece by piece as it arrives; between
  # pieces, looks (without waiting) for an early response, as Philter's
  # transport does, and stops sending once one has started.
  defp send_request_body(conn, _up, framing, _chunked?) when framing in [:none, {:length, 0}] do
    {conn, _} = HTTP.read_body(conn, fn _, acc -> {:cont, acc} end, nil)
    {conn, empty_obs(), ""}
  end

  defp send_request_body(conn, up, _framing, chunked?) do
    fun = fn piece, {obs, ""} ->
      case :gen_tcp.recv(up, 0, 0) do
        {:ok, data} ->
          {:halt, {obs, data}}

        {:error, :timeout} ->
          frame = if chunked?, do: [Integer.to_string(byte_size(piece), 16), "\r\n", piece, "\r\n"], else: piece

          case :gen_tcp.send(up, frame) do
            :ok -> {:cont, {observe(obs, piece), ""}}
            {:error, _} -> {:halt, {observe(obs, piece), ""}}
          end

        {:error, _closed} ->
          {:halt, {obs, ""}}
      end
    end

    {conn, {obs, early}} = HTTP.read_body(conn, fun, {new_obs(), ""})
    if chunked? and conn.body == :read, do: :gen_tcp.send(up, "0\r\n\r\n")
    {conn, finalize(obs), early}
  end

  defp receive_response(ctx, up, buffer, req_obs, connect_us, send_us) do
    case read_final_head(up, buffer, ctx.config.receive_timeout) do
      {:ok, status, resp_headers, rest} ->
        first_byte = now()

        {:ok, state} =
          ctx.handler.handle_response_started(
            %{
              status: status,
              headers: resp_headers,
              content_type: HTTP.header(resp_headers, "content-type"),
              time_to_first_byte_us: first_byte - ctx.started_at
            },
            ctx.handler_state
          )

        conn =
          resp_headers
          |> Enum.reject(fn {k, _} -> k in @hop_by_hop or k == "content-length" end)
          |> Enum.reduce(ctx.conn, fn {k, v}, conn -> HTTP.put_resp_header(conn, k, v) end)

        case HTTP.send_chunked(conn, status) do
          {:ok, conn} ->
            stream_response(ctx, conn, up, status, resp_headers, rest, state, req_obs, connect_us, send_us, first_byte)

          {:error, _reason, conn} ->
            timing = timing(ctx, connect_us, send_us, 0)
            finished(ctx, state, %{error: nil, status: status, timing: timing}, req_obs, empty_obs())
            conn
        end

      {:error, :timeout} ->
        error = %Mint.TransportError{reason: :timeout}
        gateway_error(ctx, ctx.conn, ctx.handler_state, error, timing(ctx, connect_us, send_us, nil), req_obs)

      {:error, reason} ->
        error = %Mint.TransportError{reason: reason}
        gateway_error(ctx, ctx.conn, ctx.handler_state, error, timing(ctx, connect_us, send_us, nil), req_obs)
    end
  end

  # skips 1xx informational responses (101 aside)
  defp read_final_head(up, buffer, timeout) do
    case HTTP.read_response(up, buffer, timeout) do
      {:ok, status, _headers, rest} when status in 100..199 and status != 101 -> read_final_head(up, rest, timeout)
      other -> other
    end
  end

  defp stream_response(ctx, conn, up, status, resp_headers, rest, state, req_obs, connect_us, send_us, first_byte) do
    framing =
      if conn.state == :sent or status in [204, 304] or ctx.conn.method == "HEAD",
        do: :none,
        else: HTTP.framing(resp_headers, :response)

    fun = fn piece, {conn, obs} ->
      case HTTP.chunk(conn, piece) do
        {:ok, conn} -> {:cont, {conn, observe(obs, piece)}}
        {:error, _} -> {:halt, {%{conn | keep_alive: false}, observe(obs, piece)}}
      end
    end

    case HTTP.stream_body(up, framing, rest, ctx.config.receive_timeout, fun, {conn, new_obs()}) do
      {:done, _rest, {conn, obs}} ->
        conn = HTTP.finish_chunked(conn)
        timing = timing(ctx, connect_us, send_us, now() - first_byte)
        finished(ctx, state, %{error: nil, status: status, timing: timing}, req_obs, finalize(obs))
        conn

      {:halted, {conn, obs}} ->
        timing = timing(ctx, connect_us, send_us, now() - first_byte)
        finished(ctx, state, %{error: nil, status: status, timing: timing}, req_obs, finalize(obs))
        %{conn | state: :sent, keep_alive: false}

      {:error, reason, {conn, obs}} ->
        # the head is out: the client gets a cut-off response and the
        # connection closes (Philter's 502/504 cannot be sent any more)
        error = if reason == :timeout, do: {:timeout, :timeout}, else: %Mint.TransportError{reason: reason}
        timing = timing(ctx, connect_us, send_us, now() - first_byte)
        finished(ctx, state, %{error: error, status: nil, timing: timing}, req_obs, finalize(obs))
        %{conn | state: :sent, keep_alive: false}
    end
  end

  # lib/philter.ex: handle_error/3 (timeouts are 504, the rest 502)
  defp gateway_error(ctx, conn, state, %Mint.TransportError{reason: reason} = error, timing, req_obs) do
    {error, status, body} =
      if reason in [:timeout, :connect_timeout],
        do: {{:timeout, reason}, 504, "Gateway Timeout"},
        else: {error, 502, "Bad Gateway"}

    finished(ctx, state, %{error: error, status: nil, timing: timing}, req_obs, empty_obs())
    HTTP.send_resp(conn, status, "text/plain; charset=utf-8", body)
  end

  defp finished(ctx, state, result, req_obs, resp_obs) do
    result =
      Map.merge(result, %{
        request_observation: req_obs,
        response_observation: resp_obs,
        upstream_url: ctx.upstream_url,
        method: ctx.conn.method,
        duration_us: now() - ctx.started_at
      })

    ctx.handler.handle_response_finished(result, state)
  end

  defp timing(ctx, connect_us, send_us, recv_us),
    do: %{total_us: now() - ctx.started_at, connect_us: connect_us, send_us: send_us, recv_us: recv_us}

  # body observations: SHA-256 and size, computed as the body streams
  defp new_obs, do: {:crypto.hash_init(:sha256), 0}
  defp observe({hash, size}, piece), do: {:crypto.hash_update(hash, piece), size + byte_size(piece)}
  defp finalize({hash, size}), do: %{hash: Base.encode16(:crypto.hash_final(hash), case: :lower), size: size}
  defp empty_obs, do: finalize(new_obs())

  defp now, do: System.monotonic_time(:microsecond)
end

defmodule Lightning.Channels.Handler do
  @moduledoc false
  # lib/lightning/channels/handler.ex: the Philter handler that persists a
  # ChannelRequest per proxied request and a ChannelEvent when it ends.
  alias Lightning.Channels.{ChannelEvent, ChannelRequest}
  alias Lightning.Repo

  @known_transport_errors ~w(nxdomain econnrefused ehostunreach enetunreach closed econnreset econnaborted epipe)a

  # lib/lightning/channels/handler.ex: handle_request_started/2 — the
  # ChannelRequest is inserted synchronously; if that fails (a request_id
  # already used), the request is rejected with 503.
  def handle_request_started(metadata, state) do
    attrs = %{
      channel_id: state.channel.id,
      channel_snapshot_id: state.snapshot.id,
      request_id: state.request_id,
      client_identity: state.client_identity,
      client_webhook_auth_method_id: Map.get(state, :client_webhook_auth_method_id),
      client_auth_type: Map.get(state, :client_auth_type),
      state: :pending,
      started_at: state.started_at
    }

    case %ChannelRequest{} |> ChannelRequest.changeset(attrs) |> Repo.insert() do
      {:ok, channel_request} ->
        {:ok, Map.merge(state, %{channel_request: channel_request, request_method: metadata.method})}

      {:error, _changeset} ->
        {:reject, 503, "Service Unavailable", state}
    end
  end

  # lib/lightning/channels/handler.ex: handle_response_started/2
  def handle_response_started(metadata, state) do
    {:ok, Map.merge(state, %{ttfb_us: metadata.time_to_first_byte_us, response_status: metadata.status})}
  end

  # lib/lightning/channels/handler.ex: handle_response_finished/2 and
  # persist_completion/2 — the event, then the request's final state.
  def handle_response_finished(result, state) do
    request_state =
      cond do
        match?({:timeout, _}, result.error) -> :timeout
        result.error != nil -> :error
        result.status in 200..299 -> :success
        result.status in 400..599 -> :failed
        true -> :error
      end

    ttfb_us = Map.get(state, :ttfb_us)

    event_attrs = %{
      channel_request_id: state.channel_request.id,
      type: if(result.error != nil, do: :error, else: :destination_response),
      request_method: state.request_method,
      request_path: state.request_path,
      request_query_string: state.query_string,
      request_body_hash: result.request_observation.hash,
      request_body_size: result.request_observation.size,
      response_status: result.status,
      response_body_hash: result.response_observation.hash,
      response_body_size: result.response_observation.size,
      latency_us: result.duration_us,
      ttfb_us: ttfb_us,
      request_send_us: result.timing.send_us,
      response_duration_us: result.timing.recv_us,
      connect_us: result.timing.connect_us,
      error_message: if(result.error, do: classify_error(result.error))
    }

    request_update = %{
      state: request_state,
      completed_at: DateTime.utc_now(),
      latency_us: result.duration_us,
      ttfb_us: ttfb_us,
      response_status: result.status
    }

    with {:ok, _event} <- %ChannelEvent{} |> ChannelEvent.changeset(event_attrs) |> Repo.insert(),
         {:ok, _request} <- state.channel_request |> ChannelRequest.changeset(request_update) |> Repo.update() do
      :ok
    else
      {:error, _changeset} ->
        state.channel_request
        |> ChannelRequest.changeset(%{state: :error, completed_at: DateTime.utc_now()})
        |> Repo.update()
    end

    {:ok, state}
  end

  defp classify_error({:timeout, :connect_timeout}), do: "connect_timeout"
  defp classify_error({:timeout, :timeout}), do: "response_timeout"
  defp classify_error({:timeout, {:closed, :timeout}}), do: "timeout"
  defp classify_error(%{reason: reason}) when reason in @known_transport_errors, do: Atom.to_string(reason)
  defp classify_error(error), do: inspect(error)
end

defmodule LightningWeb.Auth do
  @moduledoc false
  alias Lightning.StandIn.HTTP
  alias Lightning.Workflows.WebhookAuthMethod

  # lib/lightning_web/auth.ex: valid_key?/2 — an x-api-key header equal to
  # an :api method's key (constant-time compare)
  def valid_key?(conn, methods) do
    Enum.any?(methods, fn
      %WebhookAuthMethod{auth_type: :api, api_key: key} when is_binary(key) ->
        Enum.any?(HTTP.get_req_header(conn, "x-api-key"), &secure_compare(&1, key))

      _ ->
        false
    end)
  end

  # lib/lightning_web/auth.ex: valid_user?/2 — "authorization: Basic
  # base64(user:pass)" (scheme case-insensitive, split at the first ":")
  # matching a :basic method
  def valid_user?(conn, methods) do
    Enum.any?(methods, fn
      %WebhookAuthMethod{auth_type: :basic, username: user, password: pass} when is_binary(user) and is_binary(pass) ->
        Enum.any?(HTTP.get_req_header(conn, "authorization"), fn value ->
          with [scheme, encoded] <- String.split(value, " ", parts: 2),
               "basic" <- String.downcase(scheme),
               {:ok, decoded} <- Base.decode64(String.trim(encoded)),
               [u, p] <- String.split(decoded, ":", parts: 2) do
            secure_compare(u, user) and secure_compare(p, pass)
          else
            _ -> false
          end
        end)

      _ ->
        false
    end)
  end

  # Plug.Crypto.secure_compare/2
  defp secure_compare(a, b) when byte_size(a) == byte_size(b), do: :crypto.hash_equals(a, b)
  defp secure_compare(_a, _b), do: false
end

defmodule LightningWeb.ChannelProxyPlug do
  @moduledoc false
  # lib/lightning_web/plugs/channel_proxy_plug.ex
  alias Lightning.Channels
  alias Lightning.StandIn.HTTP
  alias LightningWeb.Auth

  # channel_proxy_plug.ex: call/2 — /channels/:id/*rest inside the inbound
  # span; other paths pass through untouched.
  def call(%{path_info: ["channels", channel_id | rest]} = conn, _opts) do
    :telemetry.span([:lightning, :channel_proxy, :inbound], %{}, fn -> dispatch(conn, channel_id, rest) end)
  end

  def call(conn, _opts), do: conn

  # channel_proxy_plug.ex: dispatch/3 — UUID cast, then the channel; the
  # inbound span's stop metadata carries the outcome.
  defp dispatch(conn, channel_id, rest) do
    with {:ok, uuid} <- Lightning.StandIn.cast_uuid(channel_id),
         {:ok, channel} <- fetch_channel_with_telemetry(uuid) do
      conn = handle_resolved(conn, channel, rest)
      {conn, %{outcome: :resolved, status: conn.status, channel_id: channel.id, project_id: channel.project_id}}
    else
      :error ->
        conn = error_response(conn, 404, "Not Found")
        {conn, %{outcome: :invalid_uuid, status: conn.status}}

      :not_found ->
        conn = error_response(conn, 404, "Not Found")
        {conn, %{outcome: :unknown_channel, status: conn.status}}
    end
  end

  # channel_proxy_plug.ex: handle_resolved/3 — the request span: client
  # authentication, then forwarding.
  defp handle_resolved(conn, channel, rest) do
    :telemetry.span(
      [:lightning, :channel_proxy, :request],
      %{channel_id: channel.id, project_id: channel.project_id},
      fn ->
        result =
          case authenticate_client(conn, channel) do
            {:ok, conn, matched_auth} -> forward_request(conn, channel, rest, matched_auth)
            {:unauthorized, conn} -> error_response(conn, 401, "Unauthorized")
          end

        {result, %{channel_id: channel.id, project_id: channel.project_id, status: result.status}}
      end
    )
  end

  # channel_proxy_plug.ex: forward_request/4 (no destination credentials in
  # the stand-in, so no credential errors)
  defp forward_request(conn, channel, rest, matched_auth) do
    case Channels.get_or_create_current_snapshot(channel) do
      {:ok, snapshot} ->
        client_auth_types = channel.client_webhook_auth_methods |> Enum.map(& &1.auth_type) |> Enum.uniq()

        req = %{
          channel: channel,
          snapshot: snapshot,
          request_id: conn |> HTTP.get_resp_header("x-request-id") |> List.first(),
          forward_path: build_forward_path(rest),
          client_identity: get_client_identity(conn),
          client_auth_types: client_auth_types
        }

        proxy_upstream(conn, req, matched_auth)

      {:error, _} ->
        error_response(conn, 500, "Internal Server Error")
    end
  end

  defp authenticate_client(conn, %{client_webhook_auth_methods: []}), do: {:ok, conn, nil}

  defp authenticate_client(conn, channel) do
    match =
      Enum.find(channel.client_webhook_auth_methods, fn method ->
        case method.auth_type do
          :api -> Auth.valid_key?(conn, [method])
          :basic -> Auth.valid_user?(conn, [method])
          _ -> false
        end
      end)

    if match, do: {:ok, conn, match}, else: {:unauthorized, conn}
  end

  # channel_proxy_plug.ex: fetch_channel_with_telemetry/1 and fetch_channel/1
  defp fetch_channel_with_telemetry(uuid) do
    metadata = %{channel_id: uuid}

    :telemetry.span([:lightning, :channel_proxy, :fetch_channel], metadata, fn ->
      result =
        case Channels.get_channel_with_auth(uuid) do
          %Channels.Channel{enabled: true} = channel -> {:ok, channel}
          _ -> :not_found
        end

      {result, metadata}
    end)
  end

  # channel_proxy_plug.ex: proxy_upstream/3 — the upstream span around
  # Philter.proxy/2 with the handler's state.
  defp proxy_upstream(conn, req, matched_auth) do
    handler_state =
      %{
        channel: req.channel,
        snapshot: req.snapshot,
        request_id: req.request_id,
        started_at: DateTime.utc_now(),
        request_path: req.forward_path,
        client_identity: req.client_identity,
        query_string: conn.query_string
      }
      |> put_auth_method(matched_auth)

    metadata = %{channel_id: req.channel.id, destination_url: req.channel.destination_url, path: req.forward_path}

    :telemetry.span([:lightning, :channel_proxy, :upstream], metadata, fn ->
      result =
        Philter.proxy(conn,
          upstream: String.trim_trailing(req.channel.destination_url, "/"),
          path: req.forward_path,
          handler: {Lightning.Channels.Handler, handler_state},
          strip_headers: build_strip_headers(req.client_auth_types),
          extra_headers: build_extra_headers(conn, req),
          collect_timing: true
        )

      {result, metadata}
    end)
  end

  defp put_auth_method(state, nil), do: state

  defp put_auth_method(state, %{id: id, auth_type: auth_type}),
    do: Map.merge(state, %{client_webhook_auth_method_id: id, client_auth_type: Atom.to_string(auth_type)})

  # channel_proxy_plug.ex: build_extra_headers/2
  defp build_extra_headers(conn, req) do
    remote = conn.remote_ip |> :inet.ntoa() |> to_string()

    xff =
      case HTTP.get_req_header(conn, "x-forwarded-for") do
        [existing] -> "#{existing}, #{remote}"
        _ -> remote
      end

    [
      {"x-forwarded-for", xff},
      {"x-forwarded-host", conn.host},
      {"x-forwarded-proto", "http"},
      {"x-request-id", req.request_id}
    ]
  end

  # channel_proxy_plug.ex: build_strip_headers/1
  defp build_strip_headers(client_auth_types) do
    client_auth_types
    |> Enum.flat_map(fn
      :api -> ["x-api-key"]
      :basic -> ["authorization"]
      _ -> []
    end)
    |> Enum.uniq()
  end

  defp build_forward_path([]), do: "/"
  defp build_forward_path(segments), do: "/" <> Enum.join(segments, "/")

  defp get_client_identity(conn) do
    case HTTP.get_req_header(conn, "x-forwarded-for") do
      [xff | _] -> xff |> String.split(",") |> List.first() |> String.trim()
      [] -> conn.remote_ip |> :inet.ntoa() |> to_string()
    end
  end

  # channel_proxy_plug.ex: error_response/3 (Phoenix's json/2)
  defp error_response(conn, status, message) do
    HTTP.send_resp(conn, status, "application/json; charset=utf-8", ~s({"error":"#{message}"}))
  end
end

defmodule LightningWeb.Endpoint do
  @moduledoc false
  # Stands for Phoenix's endpoint on Cowboy: one process per client
  # connection, keep-alive, Plug.RequestId, then ChannelProxyPlug; anything
  # else is a 404.
  alias Lightning.StandIn.{Conn, HTTP}

  def listen(port), do: Lightning.StandIn.Listener.listen(port, &serve(&1, ""))

  defp serve(sock, buffer) do
    with {:ok, method, target, version, headers, rest} <- HTTP.read_request(sock, buffer),
         {:ok, %Conn{keep_alive: true, state: :sent} = conn} <- handle(build_conn(sock, method, target, version, headers, rest)) do
      serve(sock, conn.buffer)
    else
      _ -> :gen_tcp.close(sock)
    end
  end

  # One request: Plug.RequestId, ChannelProxyPlug, the router's 404; then
  # the rest of the request body is read (the connection carries on) unless
  # that cannot be done. A failure (the client went away...) ends the
  # connection; set STANDIN_DEBUG=1 to see it.
  defp handle(conn) do
    conn = request_id(conn)
    conn = LightningWeb.ChannelProxyPlug.call(conn, [])

    conn =
      if conn.state == :unset,
        do: HTTP.send_resp(conn, 404, "application/json; charset=utf-8", ~s({"error":"Not Found"})),
        else: conn

    {:ok, HTTP.discard_body(conn)}
  catch
    kind, reason ->
      if System.get_env("STANDIN_DEBUG"), do: IO.puts(:stderr, Exception.format(kind, reason, __STACKTRACE__))
      :error
  end

  defp build_conn(sock, method, target, version, headers, rest) do
    {path, query} =
      case String.split(target, "?", parts: 2) do
        [p, q] -> {p, q}
        [p] -> {p, ""}
      end

    {:ok, {ip, _port}} = :inet.peername(sock)
    connection = (HTTP.header(headers, "connection") || "") |> String.downcase()

    keep_alive =
      case version do
        {1, 1} -> not String.contains?(connection, "close")
        _ -> String.contains?(connection, "keep-alive")
      end

    %Conn{
      sock: sock,
      method: method,
      request_path: path,
      path_info: :binary.split(path, "/", [:global]) |> Enum.reject(&(&1 == "")),
      query_string: query,
      host: host_of(HTTP.header(headers, "host") || ""),
      remote_ip: ip,
      req_headers: headers,
      resp_headers: [{"cache-control", "max-age=0, private, must-revalidate"}],
      buffer: rest,
      keep_alive: keep_alive
    }
  end

  defp host_of("[" <> _ = host), do: host |> String.split("]") |> hd() |> Kernel.<>("]")
  defp host_of(host), do: host |> String.split(":") |> hd()

  # Plug.RequestId: the client's x-request-id when 20..200 bytes long, else
  # a generated one; sent back on the response.
  defp request_id(conn) do
    id =
      case HTTP.get_req_header(conn, "x-request-id") do
        [given | _] when byte_size(given) in 20..200 -> given
        _ -> generate_request_id()
      end

    HTTP.put_resp_header(conn, "x-request-id", id)
  end

  defp generate_request_id do
    binary =
      <<System.system_time(:nanosecond)::64, :erlang.phash2({node(), self()}, 16_777_216)::24,
        :erlang.unique_integer()::32>>

    Base.url_encode64(binary)
  end
end

defmodule Lightning.StandIn.Profile do
  @moduledoc false
  def name, do: "today"

  def start(port) do
    :ok =
      Lightning.Store.start([
        Lightning.Accounts.User,
        Lightning.Projects.Project,
        Lightning.Projects.ProjectUser,
        Lightning.Workflows.WebhookAuthMethod,
        Lightning.Channels.Channel,
        Lightning.Channels.ChannelAuthMethod,
        Lightning.Channels.ChannelSnapshot,
        Lightning.Channels.ChannelRequest,
        Lightning.Channels.ChannelEvent,
        Lightning.Channels.Audit
      ])

    Lightning.Accounts.init_counters()
    egress = Philter.Config.load_from_env!()

    IO.puts(
      "lightning stand-in egress: block_private_networks=#{egress.block_private_networks} " <>
        "allowed_hosts=#{Enum.join(egress.allowed_hosts, ",")}"
    )

    LightningWeb.Endpoint.listen(port)
  end
end
